// The NCCL API that the nccl backend calls: NCCL's own header in the real CUDA build,
// the emulated slice over MPI (nccl_emu.h) in the emulated one. Internal to engine/dist.
#pragma once

#if defined(HMOE_EMU)
#include "engine/dist/nccl_emu.h"
#else
#include <nccl.h>
#endif
