// kcaps firmware harness: run a TFLite Micro model on every input in `inputs.bin`.
//
// The model (`model_data.cc`, from kcaps_tflite.c_export), the op resolver (`kcaps_ops.h`,
// generated from the model's operators) are compiled in; the arena is
// the linker's `.arena` section (firmware) or KCAPS_HOST_ARENA_BYTES (host build).
// Over semihosting (or stdio on the host build) it reads fixed-size input records from
// `inputs.bin`, writes each inference's outputs (all output tensors, raw bytes, in order) to
// `outputs.bin`, and prints `KCAPS <key> <value>` lines: the arena used, the instruction-clock
// ticks of AllocateTensors and of each Invoke, the stack and heap used, and for the first
// inference one `KCAPS_OP <index> <tag> <ticks>` line per operator: TFLite Micro's profiling
// hooks (MicroProfilerInterface, called around every operator) on the same clock. The recorder
// keeps one slot per operator, not the 4,096 of tflite::MicroProfiler (80 KB of RAM).
// Exit status: 0 done, 2 AllocateTensors failed, 4 Invoke failed, 5 bad input file.
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "kcaps_ops.h"
#include "model_data.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/micro_profiler_interface.h"
#include "tensorflow/lite/micro/micro_time.h"
#include "tensorflow/lite/schema/schema_generated.h"

#ifdef KCAPS_HOST
static uint32_t kcaps_ticks() { return 0; }
static uint32_t kcaps_stack_used() { return 0; }
static void kcaps_invoke_begin() {}
static void kcaps_invoke_end() {}
namespace tflite {
uint32_t ticks_per_second() { return 0; }  // the host build is for outputs, not timing
uint32_t GetCurrentTimeTicks() { return 0; }
}  // namespace tflite
#else
extern "C" uint32_t kcaps_ticks(void);
extern "C" uint32_t kcaps_stack_used(void);
extern "C" void kcaps_invoke_begin(void);  // markers for the instruction-counting plugin
extern "C" void kcaps_invoke_end(void);

namespace tflite {
// The profiler's clock: SysTick on the processor clock (start-up code), in board clock ticks.
uint32_t ticks_per_second() { return KCAPS_CLOCK_HZ; }
uint32_t GetCurrentTimeTicks() { return kcaps_ticks(); }
}  // namespace tflite

// No libstdc++ in the image: what the compiler asks of the C++ runtime.
extern "C" void __cxa_pure_virtual() {
  printf("KCAPS_ERROR pure virtual call\n");
  fflush(stdout);
  for (;;) {
  }
}
void operator delete(void*) noexcept {}
void operator delete(void*, unsigned int) noexcept {}
#endif

// Per-operator ticks through TFLite Micro's profiling interface (one slot per operator).
class OpProfiler : public tflite::MicroProfilerInterface {
 public:
  uint32_t BeginEvent(const char* tag) override {
    if (count_ >= KCAPS_MAX_EVENTS) return KCAPS_MAX_EVENTS;  // dropped
    tags_[count_] = tag;
    start_[count_] = end_[count_] = tflite::GetCurrentTimeTicks();
    return count_++;
  }
  void EndEvent(uint32_t handle) override {
    if (handle < KCAPS_MAX_EVENTS) end_[handle] = tflite::GetCurrentTimeTicks();
  }
  void Clear() { count_ = 0; }
  void Print() const {
    for (uint32_t i = 0; i < count_; ++i) {
      printf("KCAPS_OP %lu %s %lu\n", (unsigned long)i, tags_[i],
             (unsigned long)(end_[i] - start_[i]));
    }
  }

 private:
  const char* tags_[KCAPS_MAX_EVENTS];
  uint32_t start_[KCAPS_MAX_EVENTS];
  uint32_t end_[KCAPS_MAX_EVENTS];
  uint32_t count_ = 0;
};

#ifdef KCAPS_HOST
alignas(16) static uint8_t tensor_arena[KCAPS_HOST_ARENA_BYTES];
static const size_t arena_bytes = sizeof(tensor_arena);
#else
// The arena is the linker script's `.arena` section: its size is set at link time.
extern "C" uint8_t __kcaps_arena_start[], __kcaps_arena_end[];
static uint8_t* const tensor_arena = __kcaps_arena_start;
static const size_t arena_bytes = (size_t)(__kcaps_arena_end - __kcaps_arena_start);
#endif

int main() {
  const tflite::Model* model = tflite::GetModel(g_model_data);
  static tflite::MicroMutableOpResolver<KCAPS_OP_COUNT> resolver;
  if (kcaps_register_ops(resolver) != kTfLiteOk) {
    printf("KCAPS_ERROR op resolver\n");
    return 2;
  }
  static OpProfiler profiler;
  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, arena_bytes,
                                              nullptr, &profiler);
  uint32_t start = kcaps_ticks();
  TfLiteStatus status = interpreter.AllocateTensors();
  uint32_t allocate_ticks = kcaps_ticks() - start;
  if (status != kTfLiteOk) {
    printf("KCAPS_ERROR allocate arena %u\n", (unsigned)arena_bytes);
    return 2;
  }
  printf("KCAPS arena_bytes %u\n", (unsigned)arena_bytes);
  printf("KCAPS arena_used %u\n", (unsigned)interpreter.arena_used_bytes());
  printf("KCAPS allocate_ticks %lu\n", (unsigned long)allocate_ticks);

  TfLiteTensor* input = interpreter.input(0);
  FILE* in = fopen("inputs.bin", "rb");
  FILE* out = fopen("outputs.bin", "wb");
  if (in == nullptr || out == nullptr) {
    printf("KCAPS_ERROR cannot open inputs.bin or outputs.bin\n");
    return 5;
  }
  int samples = 0;
  for (;;) {
    size_t got = fread(input->data.raw, 1, input->bytes, in);
    if (got == 0) break;
    if (got != input->bytes) {
      printf("KCAPS_ERROR input record %d has %u of %u bytes\n", samples, (unsigned)got,
             (unsigned)input->bytes);
      return 5;
    }
    profiler.Clear();
    kcaps_invoke_begin();
    start = kcaps_ticks();
    status = interpreter.Invoke();
    uint32_t ticks = kcaps_ticks() - start;
    kcaps_invoke_end();
    if (status != kTfLiteOk) {
      printf("KCAPS_ERROR invoke %d\n", samples);
      return 4;
    }
    printf("KCAPS invoke_ticks %lu\n", (unsigned long)ticks);
    if (samples == 0) profiler.Print();
    for (size_t k = 0; k < interpreter.outputs_size(); ++k) {
      TfLiteTensor* output = interpreter.output(k);
      fwrite(output->data.raw, 1, output->bytes, out);
    }
    ++samples;
  }
  fclose(in);
  fclose(out);
  struct mallinfo heap = mallinfo();
  printf("KCAPS samples %d\n", samples);
  printf("KCAPS stack_used %lu\n", (unsigned long)kcaps_stack_used());
  printf("KCAPS heap_used %lu\n", (unsigned long)heap.arena);
  return 0;
}
