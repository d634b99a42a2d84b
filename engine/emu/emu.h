// Everything kernel source sees in the emulator build (included by
// engine/cuda/device_code.h when HMOE_EMU is defined): built-ins, 16-bit floats, math,
// atomics, warp collectives, WMMA, shared memory and launch.
#pragma once

#include "engine/emu/atomics.h"
#include "engine/emu/builtins.h"
#include "engine/emu/device_math.h"
#include "engine/emu/half.h"
#include "engine/emu/launch.h"
#include "engine/emu/shared.h"
#include "engine/emu/warp.h"
#include "engine/emu/wmma.h"
