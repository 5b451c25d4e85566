/* checkpoint: safetensors files (8-byte little-endian header length, JSON header, raw
 * little-endian tensors). Reading validates every offset, dtype and shape before use. */
#ifndef QCORR_CHECKPOINT_H
#define QCORR_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "nn/data.h"
#include "nn/model.h"

#define ST_MAX_DIMS 4

typedef struct {
    char name[128];
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
    const uint8_t *data; /* into the file buffer; little-endian F32, possibly unaligned */
} StTensor;

typedef struct {
    char path[4096];
    uint8_t *file;
    size_t file_size;
    StTensor *tensors;
    int n_tensors;
    char **meta_keys, **meta_values;
    int n_meta;
} SafeTensors;

int st_read(SafeTensors *st, const char *path);
/* st_read on bytes already in memory: takes file (malloc'd) even on failure; name stands for the path. */
int st_parse(SafeTensors *st, uint8_t *file, size_t size, const char *name);
void st_free(SafeTensors *st);
const StTensor *st_find(const SafeTensors *st, const char *name);
const char *st_meta(const SafeTensors *st, const char *key); /* NULL when absent */
/* Copies a tensor into dst after checking it exists with exactly this shape (cols 0: vector);
 * a NaN or infinite value is refused, naming the file, the tensor and the index. */
int st_copy_tensor(const SafeTensors *st, const char *name, int rows, int cols, float *dst);
/* The check alone (error names the file, the tensor and both shapes). */
int st_check_tensor(const SafeTensors *st, const char *name, int rows, int cols);

typedef struct {
    char name[128];
    int rows, cols; /* cols 0: vector */
    const float *data;
} StWriteTensor;

typedef struct {
    const char *key;
    char value[4096];
} StMeta;

int st_write(const char *path, const StWriteTensor *tensors, int n_tensors, const StMeta *meta, int n_meta);

/* The model as a checkpoint: config + vocabulary in __metadata__, every tensor of the table,
 * plus extra metadata and tensors (quantization scheme, corrections) from the caller. */
int gpt_save(const GPT *m, const Vocab *vocab, const char *path, const StMeta *extra_meta, int n_extra_meta,
             const StWriteTensor *extra, int n_extra);
/* The float checkpoint of a training run, as TrainOptions.save writes it (ctx: a FloatCheckpoint). */
typedef struct {
    const Vocab *vocab;
    const char *path;
} FloatCheckpoint;
int gpt_save_float(const GPT *m, void *ctx);
/* Loads config, vocabulary and weights; max_batch sizes the activations. If st_out is given
 * the file stays open there for the caller's extra tensors/metadata, and tensors the model does
 * not have are the caller's to check; otherwise any unknown tensor is an error. */
int gpt_load(GPT *m, Vocab *vocab, const char *path, int max_batch, SafeTensors *st_out);
/* The config and vocabulary of a parsed file, checked (and every tensor of the table present with
 * its shape, so the file holds that many parameters) before anything is allocated. */
int gpt_config_from(GPTConfig *cfg, Vocab *vocab, const SafeTensors *st);
/* gpt_load on a parsed file, which stays the caller's; allow_extra: as st_out in gpt_load. */
int gpt_load_from(GPT *m, Vocab *vocab, const SafeTensors *st, int max_batch, int allow_extra);

#endif
