// Internal seam between runtime_common.cpp (streams, events, the current-stream and
// stream-id registries, shared by both builds) and the two backends (runtime_emu.cpp,
// runtime_cuda.cpp) that provide the native handles. Not for use outside engine/cuda.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "engine/cuda/runtime.h"

namespace hmoe::cuda::backend {

inline constexpr int kMaxDevices = 64;

void* stream_create(int device);
void stream_destroy(void* stream, int device) noexcept;  // never throws (called from destructors)
void stream_synchronize(void* stream, int device);

void* event_create(int device, bool timing);
void event_destroy(void* event, int device) noexcept;
void event_record(void* event, void* stream, int device);
void event_wait(void* event, void* stream, int device);
bool event_query(void* event, int device);
void event_synchronize(void* event, int device);
// Milliseconds between two completed events; the host times are the emulator's clock.
float event_elapsed_ms(void* start, void* end, std::chrono::steady_clock::time_point start_host,
                       std::chrono::steady_clock::time_point end_host);

void* pinned_alloc(size_t nbytes);
void pinned_free(void* p) noexcept;

}  // namespace hmoe::cuda::backend
