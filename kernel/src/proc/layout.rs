//! The user address space's layout: where flat programs load, where the
//! stack is, how large it starts and how far it may grow.

/// Where flat programs are loaded, and the top of the user stack.
pub const CODE_BASE: u64 = 0x40_0000;
pub const STACK_TOP: u64 = 0x7FFF_FFFF_0000;
/// The stack mapped at start; it grows on fault down to the limit.
pub const STACK_INITIAL: u64 = 128 * 1024;
/// The stack's default size limit (Linux's default RLIMIT_STACK), and the
/// room below [`STACK_TOP`] that program images leave for the stack.
pub const STACK_LIMIT: u64 = 8 << 20;

/// How much the stack grows at least, at a time.
pub(super) const STACK_GROW: u64 = 64 * 1024;
/// No stack grows below this, whatever its limit.
pub(super) const STACK_LOWEST: u64 = 0x1_0000;
pub(super) const PAGE: u64 = vm::PAGE_SIZE as u64;
