/* kcaps firmware start-up for the emulated Cortex-M boards (Armv7-M and Armv8.1-M mainline).
 *
 * Vector table, reset (FPU/MVE on, .data copied from flash, .bss zeroed, stack painted for the
 * high-water mark, C library and constructors set up, main, exit status back over semihosting),
 * fault handlers that print the fault registers and exit with status 3, and the SysTick counter
 * that TFLite Micro's profiler and the harness read (tflite::GetCurrentTimeTicks in harness.cc).
 * No CMSIS device files: the few System Control Space registers are addressed directly, and
 * MSPLIM stays at its reset value 0 (no stack-limit fault on Cortex-M55).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define SCS_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SCS_CFSR (*(volatile uint32_t *)0xE000ED28u)
#define SCS_HFSR (*(volatile uint32_t *)0xE000ED2Cu)
#define SCS_MMFAR (*(volatile uint32_t *)0xE000ED34u)
#define SCS_BFAR (*(volatile uint32_t *)0xE000ED38u)
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

#define STACK_PAINT 0xC0FFEE11u
#define SYSTICK_PERIOD 0x1000000u /* 24-bit counter */

extern uint32_t __data_start__, __data_end__, __data_load__, __bss_start__, __bss_end__;
extern uint32_t __StackTop, __StackLimit;
extern int main(void);
extern void initialise_monitor_handles(void);
extern void __libc_init_array(void);

volatile uint32_t kcaps_systick_wraps;

/* Semihosting call (BKPT 0xAB on M-profile). */
static int semihost(int op, void *arg) {
  register int r0 __asm__("r0") = op;
  register void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

/* SYS_EXIT_EXTENDED: QEMU exits with `status`. */
void kcaps_exit(int status) {
  uint32_t block[2] = {0x20026u /* ADP_Stopped_ApplicationExit */, (uint32_t)status};
  semihost(0x20, block);
  semihost(0x18, (void *)0x20026u); /* SYS_EXIT, if the extended call is not supported */
  for (;;) {
  }
}

static void put_hex(char *out, uint32_t value) {
  for (int i = 7; i >= 0; --i, value >>= 4) out[i] = "0123456789abcdef"[value & 15];
}

/* Print the fault with its registers (SYS_WRITE0: no C library) and exit with status 3. */
void kcaps_fault(uint32_t *frame, uint32_t ipsr) {
  static const char *names[16] = {"?", "Reset", "NMI", "HardFault", "MemManage", "BusFault",
                                  "UsageFault", "SecureFault", "?", "?", "?", "SVCall",
                                  "DebugMonitor", "?", "PendSV", "SysTick"};
  char line[160] = "KCAPS_FAULT ";
  strcat(line, ipsr < 16 ? names[ipsr] : "IRQ");
  const char *labels[] = {" CFSR=0x", " HFSR=0x", " PC=0x", " LR=0x", " MMFAR=0x", " BFAR=0x"};
  uint32_t values[] = {SCS_CFSR, SCS_HFSR, frame[6], frame[5], SCS_MMFAR, SCS_BFAR};
  for (int i = 0; i < 6; ++i) {
    char hex[9] = {0};
    put_hex(hex, values[i]);
    strcat(line, labels[i]);
    strcat(line, hex);
  }
  strcat(line, "\n");
  semihost(0x04, line);
  kcaps_exit(3);
}

__attribute__((naked)) void Fault_Handler(void) {
  __asm__ volatile(
      "tst lr, #4\n"
      "ite eq\n"
      "mrseq r0, msp\n"
      "mrsne r0, psp\n"
      "mrs r1, ipsr\n"
      "b kcaps_fault\n");
}

void SysTick_Handler(void) { kcaps_systick_wraps++; }

/* Free-running instruction-clock counter: SysTick on the processor clock, wraps counted. */
uint32_t kcaps_ticks(void) {
  uint32_t wraps, value;
  do {
    wraps = kcaps_systick_wraps;
    value = SYST_CVR;
  } while (wraps != kcaps_systick_wraps);
  return wraps * SYSTICK_PERIOD + (SYSTICK_PERIOD - 1u - value);
}

static void start_systick(void) {
  SYST_RVR = SYSTICK_PERIOD - 1u;
  SYST_CVR = 0;
  SYST_CSR = 7u; /* processor clock, interrupt on wrap, enabled */
  while (SYST_CVR == 0u) { /* QEMU's VAL reads 0 until the first reload */
  }
}

/* Bytes of stack ever used: the painted words below the deepest write are intact. */
uint32_t kcaps_stack_used(void) {
  uint32_t *p = &__StackLimit;
  while (p < &__StackTop && *p == STACK_PAINT) ++p;
  return (uint32_t)((uintptr_t)&__StackTop - (uintptr_t)p);
}

/* Markers around each Invoke for the instruction-counting plugin (icount_plugin.c). */
void kcaps_invoke_begin(void) { __asm__ volatile("" ::: "memory"); }
void kcaps_invoke_end(void) { __asm__ volatile("" ::: "memory"); }

void _init(void) {} /* no crti.o / crtbegin.o: -nostartfiles */
void *__dso_handle = &__dso_handle;
void _fini(void) {}

__attribute__((noreturn)) void Reset_Handler(void) {
  SCS_CPACR |= 0xFu << 20; /* CP10/CP11 full access: FPU (and MVE) */
  __asm__ volatile("dsb\nisb" ::: "memory");
  memcpy(&__data_start__, &__data_load__,
         (size_t)((uintptr_t)&__data_end__ - (uintptr_t)&__data_start__));
  memset(&__bss_start__, 0, (size_t)((uintptr_t)&__bss_end__ - (uintptr_t)&__bss_start__));
  uint32_t *sp;
  __asm__ volatile("mov %0, sp" : "=r"(sp));
  for (uint32_t *p = &__StackLimit; p < sp - 16; ++p) *p = STACK_PAINT;
  initialise_monitor_handles();
  __libc_init_array();
  start_systick();
  int status = main();
  fflush(stdout);
  fflush(stderr);
  kcaps_exit(status);
  for (;;) {
  }
}

typedef void (*vector)(void);
__attribute__((section(".vectors"), used)) const vector kcaps_vectors[16] = {
    (vector)&__StackTop, Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, Fault_Handler, 0, 0, 0, Fault_Handler, Fault_Handler, 0,
    Fault_Handler, SysTick_Handler};
