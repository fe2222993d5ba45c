/*
 * guest-exit CODE: end the microVM with a verdict QEMU turns into its exit
 * status, through the isa-debug-exit device at I/O port 0xf4
 * (QEMU exits with (CODE << 1) | 1).
 *
 * Why a program: the Debian cloud kernel has no /dev/port, so busybox cannot
 * poke the port. No libc on purpose: built with `cc -static -nostdlib` it
 * needs nothing in the initramfs and no static libc on the build host.
 * If the port is absent (ioperm fails) it exits 1 and /init powers off.
 * Only for the guest: do not run it on a real host, where port 0xf4 may
 * belong to some device.
 */
#define SYS_ioperm 173
#define SYS_exit 60
#define DEBUG_EXIT_PORT 0xf4

static long syscall3(long n, long a, long b, long c)
{
	long r;
	__asm__ volatile("syscall"
			 : "=a"(r)
			 : "a"(n), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return r;
}

static unsigned int parse_code(const char *s)
{
	unsigned int v = 0;
	while (s && *s >= '0' && *s <= '9')
		v = v * 10 + (unsigned int)(*s++ - '0');
	return v;
}

__attribute__((used)) void guest_exit_main(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	unsigned int code = argc > 1 ? parse_code(argv[1]) : 0;

	if (syscall3(SYS_ioperm, DEBUG_EXIT_PORT, 4, 1) == 0)
		__asm__ volatile("outl %0, %w1" : : "a"(code), "Nd"(DEBUG_EXIT_PORT));
	syscall3(SYS_exit, 1, 0, 0);
	for (;;)
		;
}

__asm__(".globl _start\n"
	"_start:\n"
	"  mov %rsp, %rdi\n"
	"  and $-16, %rsp\n"
	"  call guest_exit_main\n");
