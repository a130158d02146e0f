// Gives the ES-module build of emscripten's loader the CommonJS globals it still uses on Node.
import { createRequire as __twCreateRequire } from 'node:module';
import { fileURLToPath as __twFileURLToPath } from 'node:url';
import { dirname as __twDirname } from 'node:path';
const require = __twCreateRequire(import.meta.url);
const __filename = __twFileURLToPath(import.meta.url);
const __dirname = __twDirname(__filename);
