/* test_cuda_api.c — the CUDA API (engine/cuda/dyn_cuda.h) where no GPU answers: in the default
 * build every call fails with DYN_EUNSUP and a message that says how to get CUDA; in a CUDA
 * build without a device the query fails with DYN_EUNSUP and CUDA's reason, and making a
 * context fails the same way. Callers need no #ifdef either way. (With a GPU the device calls
 * are tested by tests/gpu/test_device.c.) */
#include <string.h>

#include "cuda/dyn_cuda.h"
#include "testutil.h"

START_TEST(stub_or_no_device) {
    dyn_err err = {0};
    int n = -1;
    int rc = dyn_cuda_device_count(&n, &err);
    if (!dyn_cuda_built()) {
        ck_assert_int_eq(rc, DYN_EUNSUP);
        ck_assert_int_eq(n, 0);
        ck_assert_msg(strstr(err.msg, "make CUDA=1"), "message: %s", err.msg);
        void *p = (void *)&n;
        ck_assert_int_eq(dyn_cuda_alloc(NULL, 64, &p, &err), DYN_EUNSUP);
        ck_assert_ptr_null(p);
        ck_assert_int_eq(dyn_cuda_host_alloc(64, &p, &err), DYN_EUNSUP);
        ck_assert_ptr_null(p);
        dyn_sys s = {0};
        ck_assert_int_eq(dyn_cuda_materialize(NULL, &s, NULL, &err), DYN_EUNSUP);
        ck_assert_int_eq(dyn_cuda_native_forward(NULL, &s, NULL, NULL, 1, &err), DYN_EUNSUP);
        dyn_sys_grad g = {0};
        ck_assert_int_eq(dyn_cuda_grad_materialized(NULL, &s, NULL, &g, &err), DYN_EUNSUP);
        ck_assert_int_eq(dyn_cuda_native_backward(NULL, &s, NULL, NULL, NULL, 1, &g, &err),
                         DYN_EUNSUP);
        ck_assert_int_eq(dyn_cuda_linear_forward(NULL, NULL, 1, 1, NULL, NULL, 1, NULL, &err),
                         DYN_EUNSUP);
    } else if (rc != 0) { /* a CUDA build on a machine without a usable GPU */
        ck_assert_int_eq(rc, DYN_EUNSUP);
        ck_assert_msg(strstr(err.msg, "cudaGetDeviceCount") && strstr(err.msg, "device.cu:"),
                      "message: %s", err.msg);
    } else {
        ck_assert_int_ge(n, 1); /* a GPU: tests/gpu/ test it */
        return;
    }
    dyn_err e2 = {0};
    ck_assert_ptr_null(dyn_cuda_ctx_new(0, &e2));
    ck_assert_int_eq(e2.code, DYN_EUNSUP);
    dyn_cuda_ctx_free(NULL); /* a no-op */
}
END_TEST

/* Device numbers out of range are refused in every build. */
START_TEST(bad_device_refused) {
    dyn_err err = {0};
    dyn_cuda_info info;
    ck_assert_int_eq(dyn_cuda_device_info(1 << 20, &info, &err), DYN_EUNSUP);
    ck_assert_int_eq(dyn_cuda_device_info(-1, &info, &err), DYN_EUNSUP);
    ck_assert_str_eq(info.name, "");
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("cuda_api");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, stub_or_no_device);
    tcase_add_test(tc, bad_device_refused);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(suite)
