// N-API binding of the C ABI (kernels/include/twinfer.h) for the CUDA build, shaped after the SDK's CoreModule:
// probe() reports devices or why there are none (as data, never a throw), Engine wraps one tw_engine.
// Errors become JS Errors carrying `coreCode` (the tw_error value); out-of-memory messages add the device's free
// and total bytes, and an asynchronous kernel failure after a forward step surfaces as coreCode 7 (BACKEND).
#include <napi.h>

#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "include/twinfer.h"
#include "cuda/twinfer_cuda.h"

namespace {

Napi::Error core_error(Napi::Env env, int code, std::string msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("coreCode", Napi::Number::New(env, code));
  e.Set("name", Napi::String::New(env, "CoreError"));
  return e;
}

std::string mem_note(int device) {
  size_t free_b = 0, total = 0;
  if (twcuda_mem_info(device, &free_b, &total) != 0) return "";
  return "; the GPU has " + std::to_string(free_b) + " bytes free of " + std::to_string(total);
}

void check(Napi::Env env, int rc, int device) {
  if (rc == TW_OK) {
    const char* async_err = twcuda_take_error();
    if (async_err && async_err[0]) throw core_error(env, TW_ERR_BACKEND, std::string("CUDA error: ") + async_err);
    return;
  }
  std::string msg = tw_last_error();
  if (rc == TW_ERR_OUT_OF_MEMORY) msg += mem_note(device);
  const char* async_err = twcuda_take_error();
  if (async_err && async_err[0]) msg += std::string(" [CUDA: ") + async_err + "]";
  throw core_error(env, rc, msg);
}

int32_t get_i32(const Napi::Object& o, const char* k) { return o.Get(k).As<Napi::Number>().Int32Value(); }
float get_f32(const Napi::Object& o, const char* k) { return o.Get(k).As<Napi::Number>().FloatValue(); }

Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object r = Napi::Object::New(env);
  int count = 0;
  char msg[512] = {0};
  const int rc = twcuda_probe(&count, msg, sizeof msg);
  Napi::Array devices = Napi::Array::New(env);
  for (int i = 0; rc == 0 && i < count; ++i) {
    char name[256] = {0};
    size_t total = 0, free_b = 0;
    int major = 0, minor = 0;
    if (twcuda_device_info(i, name, sizeof name, &total, &free_b, &major, &minor) != 0) continue;
    Napi::Object d = Napi::Object::New(env);
    d.Set("name", name);
    d.Set("memoryBytes", (double)total);
    d.Set("freeBytes", (double)free_b);
    d.Set("computeCapability", std::to_string(major) + "." + std::to_string(minor));
    devices.Set(devices.Length(), d);
  }
  bool usable = false;
  for (uint32_t i = 0; i < devices.Length(); ++i) {
    const std::string cc = devices.Get(i).As<Napi::Object>().Get("computeCapability").As<Napi::String>();
    if (std::stoi(cc) >= 8) usable = true;
  }
  r.Set("available", usable);
  std::string reason;
  if (rc != 0 || count == 0) reason = msg;
  else if (!usable) reason = "no CUDA device with compute capability 8.0 or newer";
  else reason = std::to_string(devices.Length()) + " CUDA device(s)";
  r.Set("reason", reason);
  r.Set("devices", devices);
  return r;
}

Napi::Value TypeRowSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), (double)tw_type_row_size(info[0].As<Napi::Number>().Int32Value(),
                                                                 info[1].As<Napi::Number>().Int64Value()));
}
Napi::Value TypeSupported(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), tw_type_supported(info[0].As<Napi::Number>().Int32Value()) != 0);
}
Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int32_t type = info[0].As<Napi::Number>().Int32Value();
  Napi::Uint8Array src = info[1].As<Napi::Uint8Array>();
  const int64_t n = info[2].As<Napi::Number>().Int64Value();
  const size_t need = tw_type_row_size(type, n);
  if (n < 0 || need == 0 || src.ByteLength() < need)
    throw core_error(env, TW_ERR_INVALID_ARGUMENT, "dequantize: source holds " + std::to_string(src.ByteLength()) +
                                                       " bytes, " + std::to_string(n) + " values need " +
                                                       std::to_string(need));
  Napi::Float32Array out = Napi::Float32Array::New(env, (size_t)n);
  check(env, tw_dequantize(type, src.Data(), out.Data(), n), 0);
  return out;
}

class Engine : public Napi::ObjectWrap<Engine> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Engine",
                       {InstanceMethod("allocTensor", &Engine::AllocTensor),
                        InstanceMethod("writeTensor", &Engine::WriteTensor),
                        InstanceMethod("finalizeTensor", &Engine::FinalizeTensor),
                        InstanceMethod("dequantizeTensor", &Engine::DequantizeTensor),
                        InstanceMethod("ready", &Engine::Ready), InstanceMethod("forward", &Engine::Forward),
                        InstanceMethod("forwardTop", &Engine::ForwardTop),
                        InstanceMethod("submitTop", &Engine::SubmitTop), InstanceMethod("waitTop", &Engine::WaitTop),
                        InstanceMethod("copyKVBlock", &Engine::CopyKVBlock),
                        InstanceMethod("memory", &Engine::Memory), InstanceMethod("dispose", &Engine::Dispose)});
  }

  Engine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Engine>(info) {
    Napi::Env env = info.Env();
    Napi::Object h = info[0].As<Napi::Object>(), c = info[1].As<Napi::Object>();
    tw_hparams hp{};
    hp.arch = get_i32(h, "arch");
    hp.n_vocab = get_i32(h, "nVocab");
    hp.n_embd = get_i32(h, "nEmbd");
    hp.n_layer = get_i32(h, "nLayer");
    hp.n_head = get_i32(h, "nHead");
    hp.n_head_kv = get_i32(h, "nHeadKv");
    hp.head_dim = get_i32(h, "headDim");
    hp.n_ff = get_i32(h, "nFf");
    hp.n_ctx_train = get_i32(h, "nCtxTrain");
    hp.rope_mode = get_i32(h, "ropeMode");
    hp.rope_theta = get_f32(h, "ropeTheta");
    hp.rope_freq_scale = get_f32(h, "ropeFreqScale");
    hp.rms_eps = get_f32(h, "rmsEps");
    tw_runtime_config rc{};
    rc.n_threads = get_i32(c, "nThreads");
    rc.kv_type = get_i32(c, "kvType");
    rc.kv_block_size = get_i32(c, "kvBlockSize");
    rc.kv_n_blocks = get_i32(c, "kvBlocks");
    rc.max_batch_tokens = get_i32(c, "maxBatchTokens");
    rc.max_outputs = get_i32(c, "maxOutputs");
    rc.device = get_i32(c, "device");
    rc.flags = get_i32(c, "flags");
    device_ = rc.device;
    n_vocab_ = hp.n_vocab;
    check(env, tw_engine_create(&hp, &rc, &e_), device_);
  }
  ~Engine() override { Free(); }

 private:
  void Free() {
    if (e_) tw_engine_free(e_);
    e_ = nullptr;
  }
  tw_engine* live(Napi::Env env) {
    if (!e_) throw core_error(env, TW_ERR_INVALID_ARGUMENT, "engine was disposed");
    return e_;
  }

  Napi::Value AllocTensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    void* host = nullptr;
    check(env,
          tw_tensor_alloc(live(env), info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value(),
                          info[2].As<Napi::Number>().Int32Value(), info[3].As<Napi::Number>().Int64Value(),
                          info[4].As<Napi::Number>().Int64Value(), &host),
          device_);
    // Device memory has no host view: the caller streams the bytes through writeTensor.
    return env.Null();
  }
  Napi::Value WriteTensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Uint8Array data = info[3].As<Napi::Uint8Array>();
    check(env,
          tw_tensor_write(live(env), info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value(),
                          (size_t)info[2].As<Napi::Number>().Int64Value(), data.Data(), data.ByteLength()),
          device_);
    return env.Undefined();
  }
  Napi::Value FinalizeTensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    check(env,
          tw_tensor_finalize(live(env), info[0].As<Napi::Number>().Int32Value(),
                             info[1].As<Napi::Number>().Int32Value()),
          device_);
    return env.Undefined();
  }
  Napi::Value DequantizeTensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int64_t ne = info[2].As<Napi::Number>().Int64Value();
    if (ne < 0) throw core_error(env, TW_ERR_INVALID_ARGUMENT, "negative element count");
    Napi::Float32Array out = Napi::Float32Array::New(env, (size_t)ne);
    check(env,
          tw_tensor_dequantize(live(env), info[0].As<Napi::Number>().Int32Value(),
                               info[1].As<Napi::Number>().Int32Value(), out.Data()),
          device_);
    return out;
  }
  Napi::Value Ready(const Napi::CallbackInfo& info) {
    check(info.Env(), tw_engine_ready(live(info.Env())), device_);
    return info.Env().Undefined();
  }
  // Fills tb from the JS batch object (typed arrays are borrowed, not copied).
  static void read_batch(Napi::Env env, const Napi::Object& b, tw_batch& tb) {
    Napi::Int32Array tokens = b.Get("tokens").As<Napi::Int32Array>();
    Napi::Int32Array pos = b.Get("pos").As<Napi::Int32Array>();
    Napi::Int32Array seq = b.Get("seqIdx").As<Napi::Int32Array>();
    Napi::Int32Array out_idx = b.Get("outIdx").As<Napi::Int32Array>();
    Napi::Int32Array tables = b.Get("blockTables").As<Napi::Int32Array>();
    const int32_t n = (int32_t)tokens.ElementLength();
    tb.n_tokens = n;
    tb.tokens = tokens.Data();
    tb.pos = pos.Data();
    tb.seq_idx = seq.Data();
    tb.out_idx = out_idx.Data();
    tb.n_outputs = get_i32(b, "nOutputs");
    tb.n_seqs = get_i32(b, "nSeqs");
    tb.blocks_per_seq = get_i32(b, "blocksPerSeq");
    tb.block_tables = tables.Data();
    if ((int32_t)pos.ElementLength() != n || (int32_t)seq.ElementLength() != n ||
        (int32_t)out_idx.ElementLength() != n || tb.n_outputs < 0 ||
        (int64_t)tables.ElementLength() < (int64_t)tb.n_seqs * tb.blocks_per_seq)
      throw core_error(env, TW_ERR_INVALID_ARGUMENT, "batch arrays disagree in length");
  }
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    tw_batch tb{};
    read_batch(env, info[0].As<Napi::Object>(), tb);
    Napi::Float32Array logits = Napi::Float32Array::New(env, (size_t)tb.n_outputs * n_vocab_);
    tb.logits = logits.Data();
    check(env, tw_engine_forward(live(env), &tb), device_);
    submitted_.clear();  // a plain step waits for every submitted one first
    return logits;
  }
  // forwardTop(batch, k) -> { ids: Int32Array, logits: Float32Array }, n_outputs x k each (tw_engine_forward_top):
  // a batched decode step returns k values per sequence instead of n_vocab.
  Napi::Value ForwardTop(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    tw_batch tb{};
    read_batch(env, info[0].As<Napi::Object>(), tb);
    const int32_t k = info[1].As<Napi::Number>().Int32Value();
    const size_t n = (size_t)tb.n_outputs * (size_t)(k > 0 ? k : 0);
    Napi::Int32Array ids = Napi::Int32Array::New(env, n);
    Napi::Float32Array vals = Napi::Float32Array::New(env, n);
    check(env, tw_engine_forward_top(live(env), &tb, k, ids.Data(), vals.Data()), device_);
    submitted_.clear();
    Napi::Object r = Napi::Object::New(env);
    r.Set("ids", ids);
    r.Set("logits", vals);
    return r;
  }
  // submitTop(batch, k, chain) -> { ids, logits } filled once waitTop() has returned for this step
  // (tw_engine_submit_top / tw_engine_wait_top: pipelined decode). The arrays are held here until then.
  Napi::Value SubmitTop(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    tw_batch tb{};
    read_batch(env, info[0].As<Napi::Object>(), tb);
    const int32_t k = info[1].As<Napi::Number>().Int32Value();
    const bool chain = info[2].ToBoolean().Value();
    const size_t n = (size_t)tb.n_outputs * (size_t)(k > 0 ? k : 0);
    Napi::Int32Array ids = Napi::Int32Array::New(env, n);
    Napi::Float32Array vals = Napi::Float32Array::New(env, n);
    Napi::Object r = Napi::Object::New(env);
    r.Set("ids", ids);
    r.Set("logits", vals);
    check(env, tw_engine_submit_top(live(env), &tb, k, chain ? 1 : 0, ids.Data(), vals.Data()), device_);
    submitted_.push_back(Napi::Persistent(r));
    if (submitted_.size() > 2) submitted_.pop_front();  // the engine waited for it (at most two in flight)
    return r;
  }
  Napi::Value WaitTop(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    check(env, tw_engine_wait_top(live(env)), device_);
    if (!submitted_.empty()) submitted_.pop_front();
    return env.Undefined();
  }
  Napi::Value CopyKVBlock(const Napi::CallbackInfo& info) {
    check(info.Env(),
          tw_kv_copy_block(live(info.Env()), info[0].As<Napi::Number>().Int32Value(),
                           info[1].As<Napi::Number>().Int32Value()),
          device_);
    return info.Env().Undefined();
  }
  Napi::Value Memory(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    double w = 0, kv = 0, s = 0;
    check(env, tw_engine_memory(live(env), &w, &kv, &s), device_);
    Napi::Object o = Napi::Object::New(env);
    o.Set("weights", w);
    o.Set("kvCache", kv);
    o.Set("scratch", s);
    return o;
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Free();
    return info.Env().Undefined();
  }

  tw_engine* e_ = nullptr;
  int device_ = 0;
  int32_t n_vocab_ = 0;
  std::deque<Napi::ObjectReference> submitted_;  // submitTop results not yet waited for
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("probe", Napi::Function::New(env, Probe));
  exports.Set("typeRowSize", Napi::Function::New(env, TypeRowSize));
  exports.Set("typeSupported", Napi::Function::New(env, TypeSupported));
  exports.Set("dequantize", Napi::Function::New(env, Dequantize));
  exports.Set("Engine", Engine::Init(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(twinfer_cuda, Init)
