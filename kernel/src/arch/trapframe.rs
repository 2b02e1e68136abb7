//! The trap frame: the register state of an interrupted context as the
//! entry stubs (`arch::idt`) and the system-call entry leave it, the
//! vectors the kernel handles, and the names of the exceptions. A leaf:
//! what every layer that handles a trap, a system call or a new user
//! thread needs, apart from the dispatcher (`arch::trap`).
//!
//! ```text
//!   high  ss, rsp, rflags, cs, rip     pushed by the CPU
//!         error code                   by the CPU, or 0 by the stub
//!         vector                       by the stub
//!         rax rbx rcx rdx rsi rdi rbp
//!   low   r8 .. r15                    by trap_common   <- &TrapFrame
//! ```

/// The register state of an interrupted context, as the entry stubs leave it.
#[repr(C)]
#[derive(Clone, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// trap_common depends on this size to keep the stack 16-byte aligned at the call.
const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);

pub const VEC_DEBUG: u8 = 1;
pub const VEC_NMI: u8 = 2;
pub const VEC_BREAKPOINT: u8 = 3;
pub const VEC_DOUBLE_FAULT: u8 = 8;
pub const VEC_PAGE_FAULT: u8 = 14;
pub const VEC_TIMER: u8 = 32;
/// Device interrupts routed through the I/O APIC (`crate::dev`).
pub const VEC_DEVICE: u8 = 48;
/// The IPI that wakes a halted CPU for a thread made ready
/// (`kern::sched`).
pub const VEC_WAKEUP: u8 = 240;
/// The IPI that asks a CPU to invalidate TLB entries (`arch::tlb`).
pub const VEC_SHOOTDOWN: u8 = 241;
pub const VEC_SPURIOUS: u8 = 255;

/// Names of the architectural exceptions, by vector.
pub fn exception_name(vector: u8) -> (&'static str, &'static str) {
    match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "bound range exceeded"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        9 => ("", "coprocessor segment overrun"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack-segment fault"),
        13 => ("#GP", "general protection fault"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 floating-point error"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating-point exception"),
        20 => ("#VE", "virtualization exception"),
        21 => ("#CP", "control protection exception"),
        28 => ("#HV", "hypervisor injection exception"),
        29 => ("#VC", "VMM communication exception"),
        30 => ("#SX", "security exception"),
        32..=255 => ("", "interrupt"),
        _ => ("", "reserved exception"),
    }
}
