/*
 * errors.c: every error path of repconv's C API, checked from C: NULL
 * pointers, wrong lengths, wrong shapes, invalid parameters, overlapping
 * buffers, bad ISA names, unreadable and corrupt checkpoints. For each, the
 * status code must be the documented one, handle outputs must be NULL, and
 * repconv_last_error() must name the problem. Also checks a small
 * convolution against a naive one and that a success clears the last error.
 * .ci/run runs it natively and under valgrind.
 *
 * usage: errors MODEL.safetensors     (a valid checkpoint, e.g. tests/fixtures/s0.fused.safetensors)
 * exit status: 0 when every check passes, 1 otherwise.
 *
 * Build (from the repository root, after `cargo build --release -p repconv-capi`):
 *   cc -std=c11 -O2 -Icapi/include capi/examples/errors.c -Ltarget/release -lrepconv_capi \
 *      -Wl,-rpath,"$PWD/target/release" -o errors
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repconv.h"

static int checks = 0, failures = 0;

/* Checks that `status` is `want` and that the last error mentions `needle`
 * (an empty needle only requires a non-empty message). */
static void expect(const char *what, int status, int want, const char *needle) {
    checks++;
    const char *msg = repconv_last_error();
    if (status != want) {
        failures++;
        printf("FAIL %s: got %s, want %s (%s)\n", what, repconv_status_name(status),
               repconv_status_name(want), msg);
    } else if (want != REPCONV_OK && (msg == NULL || !*msg || !strstr(msg, needle))) {
        failures++;
        printf("FAIL %s: %s, but the message \"%s\" does not mention \"%s\"\n", what,
               repconv_status_name(status), msg ? msg : "(null)", needle);
    } else if (want == REPCONV_OK && (msg == NULL || *msg)) {
        failures++;
        printf("FAIL %s: succeeded but the last error is \"%s\"\n", what, msg ? msg : "(null)");
    } else if (want != REPCONV_OK) {
        printf("ok   %-44s %-28s %s\n", what, repconv_status_name(status), msg);
    }
}

static void expect_true(const char *what, int ok) {
    checks++;
    if (!ok) {
        failures++;
        printf("FAIL %s\n", what);
    }
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    *len = 0;
    if (f && fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n)) != NULL) {
            if (fread(buf, 1, (size_t)n, f) == (size_t)n) {
                *len = (size_t)n;
            } else {
                free(buf);
                buf = NULL;
            }
        }
    }
    if (f) fclose(f);
    return buf;
}

/* The convolution checks: an 8 -> 16 channel 3x3 convolution, padding 1,
 * bias, ReLU, on a 2x8x5x7 input. */
static void conv_checks(void) {
    enum { CIN = 8, COUT = 16, N = 2, H = 5, W = 7 };
    static float weights[COUT * CIN * 9], bias[COUT], input[N * CIN * H * W], output[N * COUT * H * W];
    for (size_t i = 0; i < sizeof weights / sizeof *weights; i++) weights[i] = (float)((int)(i % 17) - 8) / 16.0f;
    for (size_t i = 0; i < COUT; i++) bias[i] = (float)i / 32.0f - 0.25f;
    for (size_t i = 0; i < sizeof input / sizeof *input; i++) input[i] = (float)((int)(i % 13) - 6) / 8.0f;
    const size_t wlen = sizeof weights / sizeof *weights, olen = sizeof output / sizeof *output;

    repconv_conv_params p;
    expect("params_init(NULL)", repconv_conv_params_init(NULL, CIN, COUT, 3, 3), REPCONV_ERR_NULL, "params");
    expect("params_init", repconv_conv_params_init(&p, CIN, COUT, 3, 3), REPCONV_OK, "");
    p.padding[0] = p.padding[1] = 1;

    int dummy = 0;
    repconv_conv *conv = (repconv_conv *)&dummy; /* must come back NULL on failure */
    expect("conv_create(params NULL)", repconv_conv_create(NULL, weights, wlen, bias, COUT, REPCONV_ACTIVATION_RELU, NULL, &conv), REPCONV_ERR_NULL, "params");
    expect_true("conv_create failure sets *out to NULL", conv == NULL);
    expect("conv_create(weights NULL)", repconv_conv_create(&p, NULL, wlen, bias, COUT, REPCONV_ACTIVATION_RELU, NULL, &conv), REPCONV_ERR_NULL, "weights");
    expect("conv_create(out NULL)", repconv_conv_create(&p, weights, wlen, bias, COUT, REPCONV_ACTIVATION_RELU, NULL, NULL), REPCONV_ERR_NULL, "out");
    expect("conv_create(weights_len wrong)", repconv_conv_create(&p, weights, wlen - 1, bias, COUT, REPCONV_ACTIVATION_RELU, NULL, &conv), REPCONV_ERR_LENGTH, "weights_len");
    expect("conv_create(bias_len wrong)", repconv_conv_create(&p, weights, wlen, bias, COUT + 1, REPCONV_ACTIVATION_RELU, NULL, &conv), REPCONV_ERR_LENGTH, "bias_len");
    expect("conv_create(bias NULL, bias_len 16)", repconv_conv_create(&p, weights, wlen, NULL, COUT, REPCONV_ACTIVATION_RELU, NULL, &conv), REPCONV_ERR_LENGTH, "bias is NULL");
    expect("conv_create(activation 7)", repconv_conv_create(&p, weights, wlen, bias, COUT, 7, NULL, &conv), REPCONV_ERR_INVALID_ARGUMENT, "activation");
    expect("conv_create(isa \"sse9\")", repconv_conv_create(&p, weights, wlen, bias, COUT, REPCONV_ACTIVATION_RELU, "sse9", &conv), REPCONV_ERR_ISA, "sse9");
    if (strcmp(repconv_isa_best(), "avx512") != 0) {
        expect("conv_create(isa avx512, CPU lacks it)", repconv_conv_create(&p, weights, wlen, bias, COUT, REPCONV_ACTIVATION_RELU, "avx512", &conv), REPCONV_ERR_ISA, "avx512");
    }
    repconv_conv_params bad = p;
    bad.groups = 3;
    expect("conv_create(groups 3 of 8 channels)", repconv_conv_create(&bad, weights, wlen, bias, COUT, REPCONV_ACTIVATION_RELU, NULL, &conv), REPCONV_ERR_INVALID_ARGUMENT, "groups");
    bad = p;
    bad.stride[1] = 0;
    expect("conv_create(stride 0)", repconv_conv_create(&bad, weights, wlen, bias, COUT, REPCONV_ACTIVATION_RELU, NULL, &conv), REPCONV_ERR_INVALID_ARGUMENT, "stride");
    bad = p;
    bad.out_channels = SIZE_MAX / 4;
    expect("conv_create(huge out_channels)", repconv_conv_create(&bad, weights, wlen, bias, COUT, REPCONV_ACTIVATION_RELU, NULL, &conv), REPCONV_ERR_TOO_LARGE, "weights");
    expect_true("conv_create failures leave *out NULL", conv == NULL);

    expect("conv_create", repconv_conv_create(&p, weights, wlen, bias, COUT, REPCONV_ACTIVATION_RELU, NULL, &conv), REPCONV_OK, "");
    if (!conv) return;
    /* A private pool: joined on destroy, so valgrind sees no live threads. */
    expect("conv_set_threads(2)", repconv_conv_set_threads(conv, 2), REPCONV_OK, "");
    expect("conv_set_threads(5000)", repconv_conv_set_threads(conv, 5000), REPCONV_ERR_INVALID_ARGUMENT, "threads");
    expect("conv_set_threads(NULL)", repconv_conv_set_threads(NULL, 2), REPCONV_ERR_NULL, "conv");

    size_t shape[4] = {N, CIN, H, W}, out_shape[4];
    expect("conv_output_shape(conv NULL)", repconv_conv_output_shape(NULL, shape, out_shape), REPCONV_ERR_NULL, "conv");
    expect("conv_output_shape(out NULL)", repconv_conv_output_shape(conv, shape, NULL), REPCONV_ERR_NULL, "output_shape");
    expect("conv_output_shape", repconv_conv_output_shape(conv, shape, out_shape), REPCONV_OK, "");
    expect_true("output shape is {2, 16, 5, 7}", out_shape[0] == N && out_shape[1] == COUT && out_shape[2] == H && out_shape[3] == W);

    expect("conv_forward(conv NULL)", repconv_conv_forward(NULL, input, shape, output, olen), REPCONV_ERR_NULL, "conv");
    expect("conv_forward(input NULL)", repconv_conv_forward(conv, NULL, shape, output, olen), REPCONV_ERR_NULL, "input");
    expect("conv_forward(shape NULL)", repconv_conv_forward(conv, input, NULL, output, olen), REPCONV_ERR_NULL, "shape");
    expect("conv_forward(output NULL)", repconv_conv_forward(conv, input, shape, NULL, olen), REPCONV_ERR_NULL, "output");
    expect("conv_forward(output_len wrong)", repconv_conv_forward(conv, input, shape, output, olen + 1), REPCONV_ERR_LENGTH, "output_len");
    size_t wrong_c[4] = {N, CIN - 1, H, W};
    expect("conv_forward(7 channels for 8)", repconv_conv_forward(conv, input, wrong_c, output, olen), REPCONV_ERR_SHAPE, "channels");
    size_t zero[4] = {N, CIN, 0, W};
    expect("conv_forward(h = 0)", repconv_conv_forward(conv, input, zero, output, olen), REPCONV_ERR_SHAPE, "zero");
    size_t huge[4] = {SIZE_MAX / 2, CIN, H, W};
    expect("conv_forward(n = SIZE_MAX/2)", repconv_conv_forward(conv, input, huge, output, olen), REPCONV_ERR_TOO_LARGE, "input");
    expect("conv_forward(output overlaps input)", repconv_conv_forward(conv, output, shape, output, olen), REPCONV_ERR_INVALID_ARGUMENT, "overlap");
    const char *name = NULL;
    expect("conv_kernel_name(name NULL)", repconv_conv_kernel_name(conv, NULL), REPCONV_ERR_NULL, "name");
    expect("conv_isa(conv NULL)", repconv_conv_isa(NULL, &name), REPCONV_ERR_NULL, "conv");
    expect("conv_threads(threads NULL)", repconv_conv_threads(conv, NULL), REPCONV_ERR_NULL, "threads");

    /* The happy path, against a naive convolution. */
    memset(output, 0xff, sizeof output); /* NaN: every element must be written */
    expect("conv_forward", repconv_conv_forward(conv, input, shape, output, olen), REPCONV_OK, "");
    double max_err = 0;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < COUT; o++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    double acc = bias[o];
                    for (int i = 0; i < CIN; i++)
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++) {
                                int iy = y + ky - 1, ix = x + kx - 1;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                acc += (double)weights[((o * CIN + i) * 3 + ky) * 3 + kx] *
                                       input[((n * CIN + i) * H + iy) * W + ix];
                            }
                    double want = acc > 0 ? acc : 0;
                    double got = output[((n * COUT + o) * H + y) * W + x];
                    double err = fabs(got - want);
                    if (!(err <= max_err)) max_err = err; /* NaN-aware */
                }
    expect_true("conv_forward matches a naive convolution (|err| <= 1e-5)", max_err <= 1e-5);
    size_t threads = 0;
    expect("conv_kernel_name", repconv_conv_kernel_name(conv, &name), REPCONV_OK, "");
    expect("conv_threads", repconv_conv_threads(conv, &threads), REPCONV_OK, "");
    printf("conv: kernel %s, %zu threads, max |err| vs naive %.2e\n", name, threads, max_err);

    /* Plane smaller than the kernel (no padding). */
    repconv_conv_params nopad;
    repconv_conv *small = NULL;
    repconv_conv_params_init(&nopad, CIN, COUT, 3, 3);
    expect("conv_create(no padding)", repconv_conv_create(&nopad, weights, wlen, NULL, 0, REPCONV_ACTIVATION_NONE, "portable", &small), REPCONV_OK, "");
    size_t tiny[4] = {1, CIN, 2, 2};
    expect("conv_forward(2x2 plane, 3x3 kernel)", repconv_conv_forward(small, input, tiny, output, COUT), REPCONV_ERR_SHAPE, "kernel");
    expect("conv_output_shape(2x2 plane, 3x3 kernel)", repconv_conv_output_shape(small, tiny, out_shape), REPCONV_ERR_SHAPE, "kernel");
    repconv_conv_destroy(small);
    repconv_conv_destroy(conv);
}

/* The network checks. */
static void net_checks(const char *model) {
    int dummy = 0;
    repconv_net *net = (repconv_net *)&dummy;
    expect("net_load(path NULL)", repconv_net_load(NULL, NULL, &net), REPCONV_ERR_NULL, "path");
    expect_true("net_load failure sets *out to NULL", net == NULL);
    expect("net_load(out NULL)", repconv_net_load(model, NULL, NULL), REPCONV_ERR_NULL, "out");
    expect("net_load(missing file)", repconv_net_load("/nonexistent/model.safetensors", NULL, &net), REPCONV_ERR_IO, "/nonexistent/model.safetensors");
    expect("net_load(bad isa)", repconv_net_load(model, "neon9", &net), REPCONV_ERR_ISA, "neon9");

    size_t len = 0;
    unsigned char *bytes = read_file(model, &len);
    expect_true("read the model file", bytes != NULL && len > 64);
    if (!bytes) return;
    expect("net_load_bytes(bytes NULL)", repconv_net_load_bytes(NULL, len, NULL, &net), REPCONV_ERR_NULL, "bytes");
    expect("net_load_bytes(truncated)", repconv_net_load_bytes(bytes, len / 2, NULL, &net), REPCONV_ERR_FORMAT, "truncated");
    expect("net_load_bytes(empty)", repconv_net_load_bytes(bytes, 0, NULL, &net), REPCONV_ERR_FORMAT, "safetensors");
    unsigned char *garbage = malloc(len);
    if (garbage) {
        memcpy(garbage, bytes, len);
        memset(garbage, 0x7f, 8); /* a header length far beyond the file */
        expect("net_load_bytes(corrupt header length)", repconv_net_load_bytes(garbage, len, NULL, &net), REPCONV_ERR_FORMAT, "safetensors");
        memcpy(garbage, bytes, len);
        for (size_t i = 8; i < 64; i++) garbage[i] = 'x'; /* header JSON destroyed */
        expect("net_load_bytes(corrupt header JSON)", repconv_net_load_bytes(garbage, len, NULL, &net), REPCONV_ERR_FORMAT, "safetensors");
        free(garbage);
    }
    /* A valid safetensors file that is not a MobileOne checkpoint. */
    static const char other[] = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    unsigned char tiny[8 + sizeof other - 1 + 4] = {0};
    tiny[0] = (unsigned char)(sizeof other - 1); /* little-endian u64 header length */
    memcpy(tiny + 8, other, sizeof other - 1);
    expect("net_load_bytes(not a MobileOne)", repconv_net_load_bytes(tiny, sizeof tiny, NULL, &net), REPCONV_ERR_FORMAT, "variant");
    /* A corrupt file on disk. */
    char path[] = "/tmp/repconv-errors-XXXXXX";
    int fd = mkstemp(path);
    expect_true("create a temporary file", fd >= 0);
    if (fd >= 0) {
        FILE *f = fdopen(fd, "wb");
        if (f) {
            fwrite(bytes, 1, len / 3, f);
            fclose(f);
        }
        expect("net_load(truncated file)", repconv_net_load(path, NULL, &net), REPCONV_ERR_FORMAT, "truncated");
        remove(path);
    }
    expect_true("net_load failures leave *out NULL", net == NULL);

    expect("net_load_bytes", repconv_net_load_bytes(bytes, len, NULL, &net), REPCONV_OK, "");
    free(bytes);
    if (!net) return;
    expect("net_set_threads(2)", repconv_net_set_threads(net, 2), REPCONV_OK, "");
    expect("net_set_threads(100000)", repconv_net_set_threads(net, 100000), REPCONV_ERR_INVALID_ARGUMENT, "threads");

    size_t classes = 0;
    expect("net_num_classes(out NULL)", repconv_net_num_classes(net, NULL), REPCONV_ERR_NULL, "num_classes");
    expect("net_num_classes(net NULL)", repconv_net_num_classes(NULL, &classes), REPCONV_ERR_NULL, "net");
    expect("net_num_classes", repconv_net_num_classes(net, &classes), REPCONV_OK, "");
    int form = -1;
    const char *name = NULL;
    expect("net_form(form NULL)", repconv_net_form(net, NULL), REPCONV_ERR_NULL, "form");
    expect("net_variant(name NULL)", repconv_net_variant(net, NULL), REPCONV_ERR_NULL, "name");
    expect("net_isa(net NULL)", repconv_net_isa(NULL, &name), REPCONV_ERR_NULL, "net");
    expect("net_form", repconv_net_form(net, &form), REPCONV_OK, "");

    enum { N = 1, C = 3, H = 32, W = 32 };
    static float input[N * C * H * W], logits[64];
    for (size_t i = 0; i < sizeof input / sizeof *input; i++) input[i] = (float)((int)(i % 11) - 5) / 5.0f;
    size_t shape[4] = {N, C, H, W};
    size_t logits_len = N * classes;
    expect_true("at most 64 classes", classes > 0 && classes <= 64);
    expect("net_forward(net NULL)", repconv_net_forward(NULL, input, shape, logits, logits_len), REPCONV_ERR_NULL, "net");
    expect("net_forward(input NULL)", repconv_net_forward(net, NULL, shape, logits, logits_len), REPCONV_ERR_NULL, "input");
    expect("net_forward(shape NULL)", repconv_net_forward(net, input, NULL, logits, logits_len), REPCONV_ERR_NULL, "shape");
    expect("net_forward(logits NULL)", repconv_net_forward(net, input, shape, NULL, logits_len), REPCONV_ERR_NULL, "logits");
    expect("net_forward(logits_len wrong)", repconv_net_forward(net, input, shape, logits, logits_len + 1), REPCONV_ERR_LENGTH, "logits_len");
    size_t wrong_c[4] = {N, 4, H, W};
    expect("net_forward(4 channels for 3)", repconv_net_forward(net, input, wrong_c, logits, logits_len), REPCONV_ERR_SHAPE, "channels");
    size_t zero[4] = {0, C, H, W};
    expect("net_forward(n = 0)", repconv_net_forward(net, input, zero, logits, 0), REPCONV_ERR_SHAPE, "zero");
    expect("net_forward(logits overlap input)", repconv_net_forward(net, input, shape, input, logits_len), REPCONV_ERR_INVALID_ARGUMENT, "overlap");

    repconv_net *fused = (repconv_net *)&dummy;
    expect("net_reparameterize(out NULL)", repconv_net_reparameterize(net, NULL), REPCONV_ERR_NULL, "out");
    expect("net_reparameterize(net NULL)", repconv_net_reparameterize(NULL, &fused), REPCONV_ERR_NULL, "net");
    expect_true("net_reparameterize failure sets *out to NULL", fused == NULL);
    expect("net_reparameterize", repconv_net_reparameterize(net, &fused), REPCONV_OK, "");

    expect("net_forward", repconv_net_forward(net, input, shape, logits, logits_len), REPCONV_OK, "");
    int finite = 1;
    for (size_t i = 0; i < logits_len; i++) finite &= isfinite(logits[i]) != 0;
    expect_true("net_forward gives finite logits", finite);
    float again[64];
    expect("net_forward (fused copy)", repconv_net_forward(fused, input, shape, again, logits_len), REPCONV_OK, "");
    expect_true("the reparameterized copy of a fused network gives the same logits",
                memcmp(logits, again, logits_len * sizeof(float)) == 0);
    size_t threads = 0;
    expect("net_threads (copied setting)", repconv_net_threads(fused, &threads), REPCONV_OK, "");
    expect_true("the reparameterized copy has 2 threads too", threads == 2);
    repconv_net_destroy(fused);
    repconv_net_destroy(net);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: errors MODEL.safetensors\n");
        return 1;
    }
    printf("repconv %s, best ISA %s\n", repconv_version(), repconv_isa_best());
    expect_true("repconv_last_error() is \"\" before any failure", repconv_last_error()[0] == '\0');
    expect_true("repconv_status_name(-999) is \"unknown status\"",
                strcmp(repconv_status_name(-999), "unknown status") == 0);
    repconv_conv_destroy(NULL); /* no-ops */
    repconv_net_destroy(NULL);

    conv_checks();
    net_checks(argv[1]);

    /* The message is per thread and cleared by the next success. */
    expect("isa_default(NULL)", repconv_isa_default(NULL), REPCONV_ERR_NULL, "name");
    const char *isa = NULL;
    expect("isa_default", repconv_isa_default(&isa), REPCONV_OK, "");

    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
