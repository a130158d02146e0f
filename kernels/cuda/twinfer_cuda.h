/* CUDA-specific entry points beside the C ABI, for the Node addon: device discovery as data (never a crash when
 * there is no driver or no GPU), memory figures for out-of-memory messages, and the first asynchronous kernel error. */
#ifndef TWINFER_CUDA_H
#define TWINFER_CUDA_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable devices in *count; returns 0, or the CUDA error code with a one-line reason in msg. */
int twcuda_probe(int* count, char* msg, size_t msg_len);
/* Name, total and free memory (bytes), compute capability of device i; returns 0 or a CUDA error code. */
int twcuda_device_info(int i, char* name, size_t name_len, size_t* total, size_t* free_bytes, int* major, int* minor);
/* Free and total memory of device i right now. */
int twcuda_mem_info(int i, size_t* free_bytes, size_t* total);
/* The first CUDA error recorded since the last call ("" if none); clears it. */
const char* twcuda_take_error(void);

#ifdef __cplusplus
}
#endif
#endif
