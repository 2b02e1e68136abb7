//! The kernel proper, below processes and the VM glue: the scheduler and
//! its sleep locks, time, kernel memory (the heap, kernel stacks, the
//! memory map at boot), the console, and what a panic report needs (the
//! symbol table, backtraces).

pub mod backtrace;
pub mod cmdline;
pub mod heap;
pub mod kmem;
pub mod ksyms;
pub mod memory;
pub mod sched;
pub mod serial;
pub mod sync;
pub mod time;
