/*
 * A tiny TensorFlow Lite external delegate for the tests: no accelerator, the same ABI as
 * libedgetpu.so.1, libarmnnDelegate.so or libvx_delegate.so (tflite_plugin_create_delegate /
 * tflite_plugin_destroy_delegate, tensorflow/lite/delegates/external/external_delegate_interface.h).
 * tests/support/fixtures.py builds it with the system C compiler (`tiny_delegate` fixture).
 *
 * Options (strings, as load_delegate passes them):
 *   mode=none          (default) Prepare claims no node: the interpreter runs the whole model itself.
 *   mode=reshape       Prepare claims every RESHAPE node; its kernel copies the input's bytes to the
 *                      output, which is what RESHAPE computes, so answers stay bit-identical to the CPU's.
 *   mode=fail_prepare  Prepare reports an error (a delegate that loads but cannot take this model).
 *   mode=fail_invoke   as reshape, but the kernel reports an error when invoked.
 *   mode=crash         Prepare crashes the process (SIGSEGV), as a faulty vendor library may.
 *   mode=refuse        tflite_plugin_create_delegate reports an error and returns NULL (no device, say).
 *   options_file=PATH  appends every option received to PATH, one "key=value" line each, then an empty line:
 *                      one block per delegate instance created.
 * Any other option is accepted and only written to options_file, as a real delegate's would be read.
 *
 * Built with -DWITHOUT_PLUGIN_API it exports neither function: a library that is not a delegate.
 *
 * The structs below are the leading fields of those in tensorflow/lite/core/c/common.h, with the
 * layout of LiteRT 2.1.6 and tflite-runtime 2.14 (both carry TfLiteRegistration.inplace_operator and
 * TfLiteDelegate.opaque_delegate_builder). Only pointers to TfLiteContext and TfLiteNode are ever
 * received, so their trailing fields are left out; TfLiteTensor is complete (context->tensors is an
 * array of them); TfLiteRegistration is passed by value, so it is complete too.
 */
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef WITHOUT_PLUGIN_API

typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;

enum { kTfLiteBuiltinReshape = 22, kTfLiteBuiltinDelegate = 51 };

typedef struct {
  int size;
  int data[];
} TfLiteIntArray;

typedef struct {
  int type;
  void *params;
} TfLiteQuantization;

typedef struct TfLiteTensor {
  int type;
  void *data;
  TfLiteIntArray *dims;
  struct {
    float scale;
    int32_t zero_point;
  } params;
  int allocation_type;
  size_t bytes;
  const void *allocation;
  const char *name;
  struct TfLiteDelegate *delegate;
  int buffer_handle;
  bool data_is_stale;
  bool is_variable;
  TfLiteQuantization quantization;
  void *sparsity;
  const TfLiteIntArray *dims_signature;
} TfLiteTensor;

typedef struct {
  TfLiteIntArray *inputs;
  TfLiteIntArray *outputs;
  TfLiteIntArray *intermediates;
  TfLiteIntArray *temporaries;
  void *user_data;
  void *builtin_data;
} TfLiteNode;

struct TfLiteContext;
struct TfLiteDelegate;

typedef struct TfLiteRegistration {
  void *(*init)(struct TfLiteContext *context, const char *buffer, size_t length);
  void (*free)(struct TfLiteContext *context, void *buffer);
  TfLiteStatus (*prepare)(struct TfLiteContext *context, TfLiteNode *node);
  TfLiteStatus (*invoke)(struct TfLiteContext *context, TfLiteNode *node);
  const char *(*profiling_string)(const struct TfLiteContext *context, const TfLiteNode *node);
  int32_t builtin_code;
  const char *custom_name;
  int version;
  void *registration_external;
  void *(*async_kernel)(struct TfLiteContext *context, TfLiteNode *node);
  uint64_t inplace_operator;
} TfLiteRegistration;

typedef struct TfLiteContext {
  size_t tensors_size;
  TfLiteStatus (*GetExecutionPlan)(struct TfLiteContext *context, TfLiteIntArray **execution_plan);
  TfLiteTensor *tensors;
  void *impl_;
  TfLiteStatus (*ResizeTensor)(struct TfLiteContext *context, TfLiteTensor *tensor, TfLiteIntArray *new_size);
  void (*ReportError)(struct TfLiteContext *context, const char *msg, ...);
  TfLiteStatus (*AddTensors)(struct TfLiteContext *context, int tensors_to_add, int *first_new_tensor_index);
  TfLiteStatus (*GetNodeAndRegistration)(struct TfLiteContext *context, int node_index, TfLiteNode **node,
                                         TfLiteRegistration **registration);
  TfLiteStatus (*ReplaceNodeSubsetsWithDelegateKernels)(struct TfLiteContext *context,
                                                        TfLiteRegistration registration,
                                                        const TfLiteIntArray *nodes_to_replace,
                                                        struct TfLiteDelegate *delegate);
} TfLiteContext;

typedef struct TfLiteDelegate {
  void *data_;
  TfLiteStatus (*Prepare)(TfLiteContext *context, struct TfLiteDelegate *delegate);
  void *CopyFromBufferHandle;
  void *CopyToBufferHandle;
  void *FreeBufferHandle;
  int64_t flags;
  void *opaque_delegate_builder;
} TfLiteDelegate;

typedef struct {
  TfLiteDelegate *delegate;
  TfLiteIntArray *nodes_to_replace;
  TfLiteIntArray *input_tensors;
  TfLiteIntArray *output_tensors;
} TfLiteDelegateParams;

typedef enum { MODE_NONE, MODE_RESHAPE, MODE_FAIL_PREPARE, MODE_FAIL_INVOKE, MODE_CRASH } Mode;

/* One delegate kernel: the (input, output) tensor of each RESHAPE it replaced, in execution order. */
typedef struct {
  bool fail;
  int count;
  int pairs[][2];
} Kernel;

static void *kernel_init(TfLiteContext *context, const char *buffer, size_t length) {
  (void)length;
  const TfLiteDelegateParams *params = (const TfLiteDelegateParams *)buffer;
  const TfLiteIntArray *nodes = params->nodes_to_replace;
  Kernel *kernel = calloc(1, sizeof(Kernel) + (size_t)nodes->size * sizeof(int[2]));
  if (kernel == NULL) return NULL;
  kernel->fail = *(Mode *)params->delegate->data_ == MODE_FAIL_INVOKE;
  for (int i = 0; i < nodes->size; i++) {
    TfLiteNode *node;
    TfLiteRegistration *registration;
    if (context->GetNodeAndRegistration(context, nodes->data[i], &node, &registration) != kTfLiteOk) {
      free(kernel);
      return NULL;
    }
    kernel->pairs[kernel->count][0] = node->inputs->data[0];
    kernel->pairs[kernel->count][1] = node->outputs->data[0];
    kernel->count++;
  }
  return kernel;
}

static void kernel_free(TfLiteContext *context, void *buffer) {
  (void)context;
  free(buffer);
}

static TfLiteStatus kernel_prepare(TfLiteContext *context, TfLiteNode *node) {
  (void)context;
  (void)node;
  return kTfLiteOk;
}

static TfLiteStatus kernel_invoke(TfLiteContext *context, TfLiteNode *node) {
  const Kernel *kernel = node->user_data;
  if (kernel->fail) {
    context->ReportError(context, "tiny delegate: the kernel fails as asked (mode=fail_invoke)");
    return kTfLiteError;
  }
  for (int i = 0; i < kernel->count; i++) {
    const TfLiteTensor *input = &context->tensors[kernel->pairs[i][0]];
    TfLiteTensor *output = &context->tensors[kernel->pairs[i][1]];
    if (input->bytes != output->bytes || input->data == NULL || output->data == NULL) {
      context->ReportError(context, "tiny delegate: RESHAPE of %zu bytes into %zu", input->bytes, output->bytes);
      return kTfLiteError;
    }
    memcpy(output->data, input->data, output->bytes);
  }
  return kTfLiteOk;
}

static TfLiteStatus delegate_prepare(TfLiteContext *context, TfLiteDelegate *delegate) {
  const Mode mode = *(Mode *)delegate->data_;
  if (mode == MODE_NONE) return kTfLiteOk;
  if (mode == MODE_CRASH) raise(SIGSEGV);
  if (mode == MODE_FAIL_PREPARE) {
    context->ReportError(context, "tiny delegate: Prepare fails as asked (mode=fail_prepare)");
    return kTfLiteError;
  }
  TfLiteIntArray *plan;
  if (context->GetExecutionPlan(context, &plan) != kTfLiteOk) return kTfLiteError;
  TfLiteIntArray *claimed = malloc(sizeof(TfLiteIntArray) + (size_t)plan->size * sizeof(int));
  if (claimed == NULL) return kTfLiteError;
  claimed->size = 0;
  for (int i = 0; i < plan->size; i++) {
    TfLiteNode *node;
    TfLiteRegistration *registration;
    if (context->GetNodeAndRegistration(context, plan->data[i], &node, &registration) != kTfLiteOk) {
      free(claimed);
      return kTfLiteError;
    }
    if (registration->builtin_code == kTfLiteBuiltinReshape) claimed->data[claimed->size++] = plan->data[i];
  }
  TfLiteRegistration kernel = {
      .init = kernel_init,
      .free = kernel_free,
      .prepare = kernel_prepare,
      .invoke = kernel_invoke,
      .builtin_code = kTfLiteBuiltinDelegate,
      .custom_name = "TinyTestDelegate",
      .version = 1,
  };
  TfLiteStatus status = kTfLiteOk;
  if (claimed->size > 0) status = context->ReplaceNodeSubsetsWithDelegateKernels(context, kernel, claimed, delegate);
  free(claimed);
  return status;
}

static int write_options(const char *path, const char *const *keys, const char *const *values, size_t count) {
  FILE *file = fopen(path, "a");
  if (file == NULL) return -1;
  for (size_t i = 0; i < count; i++) fprintf(file, "%s=%s\n", keys[i], values[i]);
  fputc('\n', file);
  return fclose(file);
}

TfLiteDelegate *tflite_plugin_create_delegate(const char *const *keys, const char *const *values, size_t count,
                                              void (*report_error)(const char *)) {
  Mode mode = MODE_NONE;
  for (size_t i = 0; i < count; i++) {
    if (strcmp(keys[i], "options_file") == 0 && write_options(values[i], keys, values, count) != 0) {
      report_error("tiny delegate: cannot write options_file");
      return NULL;
    }
    if (strcmp(keys[i], "mode") != 0) continue;
    if (strcmp(values[i], "none") == 0) {
      mode = MODE_NONE;
    } else if (strcmp(values[i], "reshape") == 0) {
      mode = MODE_RESHAPE;
    } else if (strcmp(values[i], "fail_prepare") == 0) {
      mode = MODE_FAIL_PREPARE;
    } else if (strcmp(values[i], "fail_invoke") == 0) {
      mode = MODE_FAIL_INVOKE;
    } else if (strcmp(values[i], "crash") == 0) {
      mode = MODE_CRASH;
    } else if (strcmp(values[i], "refuse") == 0) {
      report_error("tiny delegate: no device (mode=refuse)");
      return NULL;
    } else {
      report_error("tiny delegate: unknown mode, expected none, reshape, fail_prepare, fail_invoke, crash or refuse");
      return NULL;
    }
  }
  /* Room beyond the fields known here, zeroed: a newer runtime that reads further finds NULLs. */
  TfLiteDelegate *delegate = calloc(1, sizeof(TfLiteDelegate) + 64);
  Mode *data = malloc(sizeof(Mode));
  if (delegate == NULL || data == NULL) {
    free(delegate);
    free(data);
    report_error("tiny delegate: out of memory");
    return NULL;
  }
  *data = mode;
  delegate->data_ = data;
  delegate->Prepare = delegate_prepare;
  return delegate;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate *delegate) {
  if (delegate == NULL) return;
  free(delegate->data_);
  free(delegate);
}

#else

/* Exported, so that the library loads, but not the delegate interface. */
int tiny_delegate_without_plugin_api(void) { return 0; }

#endif
