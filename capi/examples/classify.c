/*
 * classify.c: run a MobileOne checkpoint on a batch through repconv's C API,
 * print each image's top class, and optionally check the logits bit for bit
 * against expected ones (what .ci/run does with logits from the Rust API).
 *
 * usage: classify [-r] [-t THREADS] [-i ISA] MODEL.safetensors INPUT.f32 N C H W [EXPECTED.f32]
 *   -r          reparameterize the loaded network before running it
 *   -t THREADS  run on a private pool of THREADS workers (default: the library's default pool)
 *   -i ISA      best, avx512, avx2 or portable (default: REPCONV_ISA, else the best)
 *   INPUT.f32   N*C*H*W float32 in NCHW order, in this machine's byte order
 *   EXPECTED.f32  N*num_classes float32 logits to compare against
 * exit status: 0 success, 1 a repconv error or mismatching logits, 2 bad usage or file.
 *
 * Build (from the repository root, after `cargo build --release -p repconv-capi`):
 *   cc -std=c11 -O2 -Icapi/include capi/examples/classify.c -Ltarget/release -lrepconv_capi \
 *      -Wl,-rpath,"$PWD/target/release" -o classify
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repconv.h"

/* Runs a repconv call; on failure prints the status and the library's
 * one-line reason and jumps to cleanup. */
#define CHECK(call)                                                          \
    do {                                                                     \
        int status_ = (call);                                                \
        if (status_ != REPCONV_OK) {                                         \
            fprintf(stderr, "classify: %s failed: %s: %s\n", #call,          \
                    repconv_status_name(status_), repconv_last_error());     \
            goto cleanup;                                                    \
        }                                                                    \
    } while (0)

/* Reads a whole file of float32 into a new buffer; returns its length in
 * floats, or 0 (with a message) on failure. */
static size_t read_floats(const char *path, float **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 0;
    }
    size_t len = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long bytes = ftell(f);
        if (bytes > 0 && bytes % (long)sizeof(float) == 0 && fseek(f, 0, SEEK_SET) == 0) {
            len = (size_t)bytes / sizeof(float);
            *out = malloc(len * sizeof(float));
            if (!*out || fread(*out, sizeof(float), len, f) != len) {
                free(*out);
                *out = NULL;
                len = 0;
            }
        }
    }
    fclose(f);
    if (len == 0) fprintf(stderr, "classify: %s: not a non-empty float32 file\n", path);
    return len;
}

static int parse_size(const char *s, size_t *out) {
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || v == 0) return 0;
    *out = (size_t)v;
    return 1;
}

int main(int argc, char **argv) {
    int reparameterize = 0;
    size_t threads = 0;
    const char *isa = NULL;
    int a = 1;
    for (; a < argc && argv[a][0] == '-'; a++) {
        if (!strcmp(argv[a], "-r")) {
            reparameterize = 1;
        } else if (!strcmp(argv[a], "-t") && a + 1 < argc && parse_size(argv[a + 1], &threads)) {
            a++;
        } else if (!strcmp(argv[a], "-i") && a + 1 < argc) {
            isa = argv[++a];
        } else {
            break;
        }
    }
    size_t shape[4];
    if (argc - a < 6 || argc - a > 7 || !parse_size(argv[a + 2], &shape[0]) ||
        !parse_size(argv[a + 3], &shape[1]) || !parse_size(argv[a + 4], &shape[2]) ||
        !parse_size(argv[a + 5], &shape[3])) {
        fprintf(stderr,
                "usage: classify [-r] [-t THREADS] [-i ISA] MODEL.safetensors INPUT.f32 "
                "N C H W [EXPECTED.f32]\n");
        return 2;
    }
    const char *model = argv[a], *input_path = argv[a + 1];
    const char *expected_path = argc - a == 7 ? argv[a + 6] : NULL;

    int exit_code = 1;
    repconv_net *net = NULL;
    float *input = NULL, *logits = NULL, *expected = NULL;

    printf("repconv %s, best ISA on this CPU: %s\n", repconv_version(), repconv_isa_best());
    CHECK(repconv_net_load(model, isa, &net));
    if (reparameterize) {
        repconv_net *fused = NULL;
        CHECK(repconv_net_reparameterize(net, &fused));
        repconv_net_destroy(net);
        net = fused;
    }
    if (threads) CHECK(repconv_net_set_threads(net, threads));

    const char *variant, *isa_name;
    size_t classes, in_channels, n_threads;
    int form;
    CHECK(repconv_net_variant(net, &variant));
    CHECK(repconv_net_num_classes(net, &classes));
    CHECK(repconv_net_in_channels(net, &in_channels));
    CHECK(repconv_net_form(net, &form));
    CHECK(repconv_net_isa(net, &isa_name));
    CHECK(repconv_net_threads(net, &n_threads));
    printf("MobileOne-%s, %zu classes, %zu input channels, %s form, ISA %s, %zu thread(s)\n",
           variant, classes, in_channels,
           form == REPCONV_FORM_FUSED ? "fused"
           : form == REPCONV_FORM_MULTI_BRANCH ? "multi-branch" : "mixed",
           isa_name, n_threads);

    size_t input_len = read_floats(input_path, &input);
    if (!input_len) {
        exit_code = 2;
        goto cleanup;
    }
    if (input_len != shape[0] * shape[1] * shape[2] * shape[3]) {
        fprintf(stderr, "classify: %s holds %zu floats, not %zu x %zu x %zu x %zu\n", input_path,
                input_len, shape[0], shape[1], shape[2], shape[3]);
        exit_code = 2;
        goto cleanup;
    }
    size_t logits_len = shape[0] * classes;
    logits = malloc(logits_len * sizeof(float));
    if (!logits) goto cleanup;
    CHECK(repconv_net_forward(net, input, shape, logits, logits_len));

    for (size_t i = 0; i < shape[0]; i++) {
        const float *row = logits + i * classes;
        size_t best = 0;
        for (size_t k = 1; k < classes; k++)
            if (row[k] > row[best]) best = k;
        printf("image %zu: class %zu (logit %.6f)\n", i, best, row[best]);
    }

    if (expected_path) {
        size_t expected_len = read_floats(expected_path, &expected);
        if (expected_len != logits_len) {
            fprintf(stderr, "classify: %s holds %zu floats, the network gives %zu\n",
                    expected_path, expected_len, logits_len);
            goto cleanup;
        }
        size_t differ = 0, first = 0;
        for (size_t i = 0; i < logits_len; i++) {
            uint32_t got, want;
            memcpy(&got, &logits[i], sizeof got);
            memcpy(&want, &expected[i], sizeof want);
            if (got != want && differ++ == 0) first = i;
        }
        if (differ) {
            fprintf(stderr, "classify: %zu of %zu logits differ from %s; first [%zu]: %a vs %a\n",
                    differ, logits_len, expected_path, first, logits[first], expected[first]);
            goto cleanup;
        }
        printf("all %zu logits equal %s bit for bit\n", logits_len, expected_path);
    }
    exit_code = 0;

cleanup:
    free(expected);
    free(logits);
    free(input);
    repconv_net_destroy(net);
    return exit_code;
}
