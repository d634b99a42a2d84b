// cp.async emulation: a CUDA thread's asynchronous global -> shared copies, held by the
// runtime and landed only at the thread's matching cp.async.wait_group (the PTX ISA's
// group rules), so a kernel that reads a stage before waiting for it reads poison.
#pragma once

namespace hmoe::emu::detail {

// Records one 16-byte copy to the shared address `dst` from global `src` (cp.async with
// a source size of src_bytes, 0 to 16) and returns its 16-byte, zeroed holding buffer,
// into which the caller reads the first src_bytes of src at once. Checked first: dst
// inside the block's shared memory, dst and src 16-byte aligned. The copy joins the
// thread's open group.
void* cp_async_issue(void* dst, const void* src, unsigned src_bytes);
// Closes the thread's open group (cp.async.commit_group; an empty group is allowed).
void cp_async_commit();
// Lands every copy of the thread's committed groups except the `newest` most recent
// ones, in issue order (cp.async.wait_group newest); copies of the open group stay.
void cp_async_wait(int newest);

}  // namespace hmoe::emu::detail
