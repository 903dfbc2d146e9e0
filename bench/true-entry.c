/* The benchmark's entrypoint: a static executable that exits 0 at once, with no
 * dynamic loader and no libc start-up, so that timing "bootstrap start -> entrypoint
 * exec'd" does not also time an interpreter or ld.so. */
void _start(void)
{
    __asm__ volatile("mov $60, %eax\n\txor %edi, %edi\n\tsyscall");
    __builtin_unreachable();
}
