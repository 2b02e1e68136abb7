//! Raw programs for the tests of user mode: position-independent x86_64
//! code on the Linux ABI, loaded at a fixed address with no ELF around it
//! (`proc::spawn`). They live with the tests that run them.

// The built-in programs: position-independent x86_64 code on the Linux ABI.
core::arch::global_asm!(
    ".section .rodata.user_programs, \"a\"",
    // write(1, "hello from user mode\n", 21); exit(rax): exits with the count.
    ".global user_hello_start",
    "user_hello_start:",
    "mov eax, 1",
    "mov edi, 1",
    "lea rsi, [rip + 1f]",
    "mov edx, 21",
    "syscall",
    "mov edi, eax",
    "mov eax, 231",
    "syscall",
    "ud2",
    "1: .ascii \"hello from user mode\\n\"",
    ".global user_hello_end",
    "user_hello_end:",
    // write(1, 0xdead0000, 8): a bad pointer; exit(-rax), i.e. 14 for EFAULT.
    ".global user_efault_start",
    "user_efault_start:",
    "mov eax, 1",
    "mov edi, 1",
    "mov rsi, 0xdead0000",
    "mov edx, 8",
    "syscall",
    "neg eax",
    "mov edi, eax",
    "mov eax, 231",
    "syscall",
    "ud2",
    ".global user_efault_end",
    "user_efault_end:",
    // A store to an unmapped address: killed by SIGSEGV.
    ".global user_segv_start",
    "user_segv_start:",
    "mov rax, 0x10",
    "mov qword ptr [rax], 1",
    "ud2",
    ".global user_segv_end",
    "user_segv_end:",
    // A store into its own (read-only) code: killed by SIGSEGV.
    ".global user_rowrite_start",
    "user_rowrite_start:",
    "lea rax, [rip]",
    "mov byte ptr [rax], 0x90",
    "ud2",
    ".global user_rowrite_end",
    "user_rowrite_end:",
    // Touch 16 stack pages, write a pattern and read it back; exit(0) if it
    // held, exit(1) if not.
    ".global user_stack_start",
    "user_stack_start:",
    "mov rcx, 16",
    "mov rbx, rsp",
    "2: sub rbx, 4096",
    "mov [rbx], rcx",
    "dec rcx",
    "jnz 2b",
    "mov rcx, 16",
    "mov rbx, rsp",
    "3: sub rbx, 4096",
    "cmp [rbx], rcx",
    "jne 4f",
    "dec rcx",
    "jnz 3b",
    "xor edi, edi",
    "mov eax, 231",
    "syscall",
    "4: mov edi, 1",
    "mov eax, 231",
    "syscall",
    "ud2",
    ".global user_stack_end",
    "user_stack_end:",
    // getpid() 300,000 times, then exit(0): system calls enough for NMIs
    // to land in their entries and exits, and in user mode between.
    ".global user_syscalls_start",
    "user_syscalls_start:",
    "mov r12d, 300000",
    "2: mov eax, 39",
    "syscall",
    "dec r12d",
    "jnz 2b",
    "xor edi, edi",
    "mov eax, 231",
    "syscall",
    "ud2",
    ".global user_syscalls_end",
    "user_syscalls_end:",
    ".text",
);

unsafe extern "C" {
    static user_hello_start: u8;
    static user_hello_end: u8;
    static user_efault_start: u8;
    static user_efault_end: u8;
    static user_segv_start: u8;
    static user_segv_end: u8;
    static user_rowrite_start: u8;
    static user_rowrite_end: u8;
    static user_stack_start: u8;
    static user_stack_end: u8;
    static user_syscalls_start: u8;
    static user_syscalls_end: u8;
}

macro_rules! program {
    ($start:ident, $end:ident) => {{
        // SAFETY: the two labels bound one program in read-only data, start
        // before end; the bytes are never written.
        unsafe {
            let s = &raw const $start;
            let e = &raw const $end;
            core::slice::from_raw_parts(s, e as usize - s as usize)
        }
    }};
}

/// The raw programs by name.
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "hello" => program!(user_hello_start, user_hello_end),
        "efault" => program!(user_efault_start, user_efault_end),
        "segv" => program!(user_segv_start, user_segv_end),
        "rowrite" => program!(user_rowrite_start, user_rowrite_end),
        "stack" => program!(user_stack_start, user_stack_end),
        "syscalls" => program!(user_syscalls_start, user_syscalls_end),
        _ => return None,
    })
}
