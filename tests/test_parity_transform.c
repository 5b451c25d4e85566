/* test_parity_transform: the transforms of README: Transforms against PyTorch (tools/ref_transform.py,
 * float64 with explicit Hadamard matrices) on the tiny model: every tensor after online, rotate,
 * smooth and rotate+smooth (seed 13, alpha 0.6, the fixture's calibration windows), and the loss
 * of the transformed model as the C forward runs it (the online transforms on), which must be the
 * float model's (and PyTorch's) to float rounding. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "parity_fixture.h"
#include "quant/transform.h"
#include "testutil.h"

#define TINY_FLOAT "tests/fixtures/gpt_tiny_init.safetensors"
#define EXPECTED "tests/fixtures/transform_expected.safetensors"
/* the folds are rounded once to float from double; the C model's absmax (float32 forward) moves
 * the smoothing scales by float32 rounding: far below a wrong fold (weight changes of 0.3-1.1) */
#define REL_TOL 2e-5
#define FLOOR_FRACTION 1e-2
#define LOSS_TOL 1e-5

static void test_transforms_match_pytorch(void **state) {
    (void)state;
    SafeTensors st;
    fixture_open(&st, EXPECTED);
    const char *names[] = {"online", "rotate", "smooth", "rotate+smooth"};
    long seed = (long)fixture_meta_number(&st, "seed");
    double alpha = fixture_meta_number(&st, "alpha");
    int ok = 1;
    for (int k = 0; k < 4; k++) {
        GPT m;
        Vocab v;
        if (gpt_load(&m, &v, TINY_FLOAT, 4, NULL) != 0) fail_msg("%s", qc_last_error());
        int V = m.config.vocab_size, T = m.config.ctx;
        int32_t *calib = fixture_ids(&st, "calib", 4 * (size_t)T, V);
        int32_t *inputs = fixture_ids(&st, "inputs", 3 * (size_t)T, V), *targets = fixture_ids(&st, "targets", 3 * (size_t)T, V);
        float *loss_float = fixture_floats(&st, "loss_float", 1);
        assert_int_equal(gpt_forward(&m, inputs, 3, T, NULL), 0);
        double before = gpt_loss(&m, targets);
        TransformScheme t;
        transform_default(&t);
        assert_int_equal(transform_parse(names[k], &t), 0);
        t.rotate_seed = (uint64_t)seed;
        t.smooth_alpha = alpha;
        assert_int_equal(transform_model(&m, &t, calib, 4, T), 0);
        for (int i = 0; i < m.n_specs; i++) {
            const TensorSpec *sp = &m.specs[i];
            char key[160], label[160];
            snprintf(key, sizeof key, "%s/%s", names[k], sp->name);
            snprintf(label, sizeof label, "%s %s", names[k], sp->name);
            float *want = fixture_floats(&st, key, tensor_numel(sp));
            ok &= compare_floats(label, m.params + sp->offset, want, tensor_numel(sp), FLOOR_FRACTION, REL_TOL);
            free(want);
        }
        char key[64], label[64];
        snprintf(key, sizeof key, "%s/loss", names[k]);
        float *want = fixture_floats(&st, key, 1);
        assert_int_equal(gpt_forward(&m, inputs, 3, T, NULL), 0);
        double after = gpt_loss(&m, targets);
        snprintf(label, sizeof label, "%s loss (C transformed vs torch)", names[k]);
        ok &= compare_scalar(label, after, want[0], LOSS_TOL);
        snprintf(label, sizeof label, "%s loss (C transformed vs C float)", names[k]);
        ok &= compare_scalar(label, after, before, LOSS_TOL);
        ok &= compare_scalar("float loss (C vs torch)", before, loss_float[0], LOSS_TOL);
        free(want);
        free(loss_float);
        free(calib);
        free(inputs);
        free(targets);
        gpt_free(&m);
    }
    st_free(&st);
    if (!ok) fail_msg("a transformed tensor or loss differs from PyTorch's (lines NOT OK above)");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transforms_match_pytorch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
