//! The IDT and the assembly entry stubs.
//!
//! Every vector the kernel handles enters through a small stub that makes the
//! stack look the same whatever the CPU pushed: it pushes a zero where the CPU
//! pushes no error code, then the vector number, and jumps to `trap_common`,
//! which saves the general registers and calls the dispatcher,
//! `arch::trap::trap_dispatch`, with a pointer to the resulting
//! [`TrapFrame`]. Returning from it restores the (possibly edited) frame and
//! `iretq`s. The frame's layout is drawn in `arch::trapframe`.
//!
//! Entries from user mode swap the GS base to the CPU's block on the way
//! in and back on the way out (`arch::percpu` has the rules): the common
//! path by the saved CS, the NMI, `#MC` and `#DF` by the MSR
//! (`paranoid_common`).
//!
//! The dispatcher is reached by its link name, not a module path: it calls
//! into every subsystem, and nothing (this file included) imports it.
//!
//! The x86-interrupt calling convention was rejected: it hides the general
//! registers, which the fault report must print, and user mode needs one
//! frame layout for traps, interrupts and system calls alike.

use core::arch::naked_asm;

use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;

use super::trapframe::{TrapFrame, VEC_BREAKPOINT, VEC_DOUBLE_FAULT, VEC_PAGE_FAULT};
use super::{gdt, percpu};

unsafe extern "C" {
    /// `arch::trap::trap_dispatch`: called by `trap_common` for every trap
    /// and interrupt, interrupts disabled.
    safe fn trap_dispatch(tf: &mut TrapFrame);
}

macro_rules! stub {
    // The CPU pushed an error code: only the vector is missing.
    (err $name:ident $vec:literal) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            naked_asm!("push {v}", "jmp {common}", v = const $vec, common = sym trap_common)
        }
    };
    // The page fault: see `pf_entry`.
    (pf $name:ident $vec:literal) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            naked_asm!("jmp {entry}", entry = sym pf_entry)
        }
    };
    // No error code: push a zero in its place.
    (noerr $name:ident $vec:literal) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            naked_asm!("push 0", "push {v}", "jmp {common}", v = const $vec, common = sym trap_common)
        }
    };
    // May come anywhere, even where the saved CS and the GS base disagree:
    // see `paranoid_common`. #DF pushes an error code, NMI and #MC none.
    (paranoid_err $name:ident $vec:literal) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            naked_asm!("push {v}", "jmp {common}", v = const $vec, common = sym paranoid_common)
        }
    };
    (paranoid $name:ident $vec:literal) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            naked_asm!("push 0", "push {v}", "jmp {common}", v = const $vec, common = sym paranoid_common)
        }
    };
}

macro_rules! stubs {
    ($($kind:ident $vec:literal $name:ident),* $(,)?) => {
        $( stub!($kind $name $vec); )*
        /// Entry stub of each handled vector.
        static STUBS: &[(u8, unsafe extern "C" fn())] = &[$(($vec, $name)),*];
    };
}

// Error codes: #DF 8, #TS 10, #NP 11, #SS 12, #GP 13, #PF 14, #AC 17, #CP 21,
// #VC 29, #SX 30 (Intel SDM vol. 3, table 6-1).
stubs! {
    noerr 0 vec0, noerr 1 vec1, paranoid 2 vec2, noerr 3 vec3, noerr 4 vec4, noerr 5 vec5,
    noerr 6 vec6, noerr 7 vec7, paranoid_err 8 vec8, noerr 9 vec9, err 10 vec10, err 11 vec11,
    err 12 vec12, err 13 vec13, pf 14 vec14, noerr 15 vec15, noerr 16 vec16,
    err 17 vec17, paranoid 18 vec18, noerr 19 vec19, noerr 20 vec20, err 21 vec21,
    noerr 22 vec22, noerr 23 vec23, noerr 24 vec24, noerr 25 vec25, noerr 26 vec26,
    noerr 27 vec27, noerr 28 vec28, err 29 vec29, err 30 vec30, noerr 31 vec31,
    noerr 32 vec32, noerr 48 vec48, noerr 240 vec240, noerr 241 vec241, noerr 255 vec255,
}

/// The page-fault entry. The CPU delivers #PF on its own IST stack, so that
/// a kernel stack overflow (a fault on the guard page, with no stack left to
/// push a frame on) is still reported. Every other fault moves its frame to
/// the interrupted stack and is handled there, where the handler may sleep
/// (waiting for a busy page or for I/O) like any thread.
///
/// A fault counts as a stack overflow when CR2 lies from 8 KiB below the
/// interrupted RSP to 64 bytes above it: an access just below the stack
/// pointer, as pushes and new frames make.
#[unsafe(naked)]
unsafe extern "C" fn pf_entry() {
    naked_asm!(
        // IST stack: [rsp] error, rip, cs, rflags, rsp (+32), ss.
        "push rax",
        "push rcx",
        // From user mode: the CPU's GS base, and the thread's kernel stack.
        "test qword ptr [rsp + 32], 3",
        "jz 3f",
        "swapgs",
        "mov rcx, gs:[{kstack}]",
        "jmp 4f",
        "3:",
        "mov rax, cr2",
        "mov rcx, [rsp + 48]",      // the interrupted RSP
        "sub rcx, rax",
        "add rcx, 64",
        "cmp rcx, 8192 + 64",
        "jb 2f",                    // looks like an overflow: stay on the IST
        // New frame base on the interrupted stack, 16-byte aligned as the
        // CPU would have made it.
        "mov rcx, [rsp + 48]",
        "4:",
        "and rcx, -16",
        "sub rcx, 48",
        "mov rax, [rsp + 16]", "mov [rcx], rax",        // error code
        "mov rax, [rsp + 24]", "mov [rcx + 8], rax",    // rip
        "mov rax, [rsp + 32]", "mov [rcx + 16], rax",   // cs
        "mov rax, [rsp + 40]", "mov [rcx + 24], rax",   // rflags
        "mov rax, [rsp + 48]", "mov [rcx + 32], rax",   // rsp
        "mov rax, [rsp + 56]", "mov [rcx + 40], rax",   // ss
        "mov rax, [rsp]", "mov [rcx - 16], rax",        // saved rcx, popped first
        "mov rax, [rsp + 8]", "mov [rcx - 8], rax",     // saved rax
        "lea rsp, [rcx - 16]",
        "2:",
        "pop rcx",
        "pop rax",
        "push 14",
        "jmp {save}",
        save = sym trap_save,
        kstack = const percpu::OFF_KERNEL_STACK,
    )
}

/// The entry of the traps and interrupts that come only where the saved CS
/// tells whose GS base is loaded: from user mode, swap to the CPU's.
///
/// On entry the stack holds the hardware frame, an error code and the
/// vector: the saved CS is at RSP + 24.
#[unsafe(naked)]
unsafe extern "C" fn trap_common() {
    naked_asm!(
        "test qword ptr [rsp + 24], 3",
        "jz {save}",
        "swapgs",
        "jmp {save}",
        save = sym trap_save,
    )
}

/// Saves the general registers, calls [`trap_dispatch`], restores, returns.
///
/// On entry the stack holds the hardware frame, an error code and the vector
/// (56 bytes above a 16-byte aligned boundary: the CPU aligns RSP before it
/// pushes in long mode). Fifteen pushes make 176 bytes, so RSP is aligned again
/// at the `call`, as the System V ABI requires.
#[unsafe(naked)]
unsafe extern "C" fn trap_save() {
    naked_asm!(
        "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
        "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14",
        "push r15",
        "mov rdi, rsp",
        "cld",
        "call {dispatch}",
        "jmp {ret}",
        dispatch = sym trap_dispatch,
        ret = sym trap_return,
    )
}

/// The entry of NMI, #MC and #DF, which can come between a `syscall` and
/// its `swapgs` or between the exit's `swapgs` and `sysretq`: the GS base
/// MSR, not the saved CS, says whose it is. A kernel address (bit 63 set)
/// is the CPU's block; anything else is the user's, swapped here and back
/// on the way out. RBX, callee-saved, carries whether it swapped across
/// the call.
#[unsafe(naked)]
unsafe extern "C" fn paranoid_common() {
    naked_asm!(
        "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
        "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14",
        "push r15",
        "xor ebx, ebx",
        "mov ecx, {gs_base}",
        "rdmsr",
        "test edx, edx",
        "js 2f",
        "swapgs",
        "mov ebx, 1",
        "2:",
        "mov rdi, rsp",
        "cld",
        "call {dispatch}",
        "test ebx, ebx",
        "jz 3f",
        "swapgs",
        "3:",
        "pop r15", "pop r14", "pop r13", "pop r12", "pop r11", "pop r10", "pop r9",
        "pop r8", "pop rbp", "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rbx",
        "pop rax",
        "add rsp, 16",
        "iretq",
        gs_base = const 0xC000_0101u32,
        dispatch = sym trap_dispatch,
    )
}

/// Restores the registers of the `TrapFrame` at RSP and returns from the
/// trap with `iretq`, swapping the GS base back first when it returns to
/// user mode: the end of `trap_save`, and how a new process thread first
/// enters user mode with a frame it was given (`proc::exit::resume_user`).
/// Interrupts are off (the dispatcher returns with them off).
#[unsafe(naked)]
pub unsafe extern "C" fn trap_return() -> ! {
    naked_asm!(
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rbp",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop rcx",
        "pop rbx",
        "pop rax",
        "add rsp, 16",
        // [rsp]: rip, cs, rflags, rsp, ss.
        "test qword ptr [rsp + 8], 3",
        "jz 2f",
        "swapgs",
        "2:",
        "iretq",
    )
}

/// One interrupt-gate descriptor of the IDT.
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const _: () = assert!(core::mem::size_of::<Gate>() == 16);

impl Gate {
    const MISSING: Gate = Gate { offset_low: 0, selector: 0, ist: 0, attributes: 0, offset_mid: 0, offset_high: 0, reserved: 0 };

    /// A present 64-bit interrupt gate (interrupts stay disabled in the handler).
    fn interrupt(handler: u64, selector: u16, ist: u16, dpl: u8) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector,
            ist: ist as u8,
            attributes: 0x80 | (dpl << 5) | 0xE,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: Once<Idt> = Once::new();

/// Builds and loads the IDT. Needs the GDT (for the code selector and the IST).
pub fn init() {
    let idt = IDT.call_once(|| {
        let cs = gdt::kernel_code_selector();
        let mut gates = [Gate::MISSING; 256];
        for &(vector, stub) in STUBS {
            let ist = match vector {
                VEC_DOUBLE_FAULT => gdt::IST_DOUBLE_FAULT,
                2 => gdt::IST_NMI,
                VEC_PAGE_FAULT => gdt::IST_PAGE_FAULT,
                18 => gdt::IST_MACHINE_CHECK,
                _ => 0,
            };
            // int3 may be used from user mode once there is one.
            let dpl = if vector == VEC_BREAKPOINT { 3 } else { 0 };
            gates[vector as usize] = Gate::interrupt(stub as usize as u64, cs, ist, dpl);
        }
        Idt(gates)
    });
    let ptr =
        DescriptorTablePointer { limit: (core::mem::size_of::<Idt>() - 1) as u16, base: VirtAddr::new(idt as *const Idt as u64) };
    // SAFETY: the table lives in a static, and every present gate points at an
    // entry stub above that leaves a TrapFrame and calls trap_dispatch.
    unsafe { lidt(&ptr) };
}
