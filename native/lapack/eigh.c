/*
 * sliceserve_lapack: a minimal N-API addon exposing LAPACK's dsyevd (symmetric
 * eigendecomposition, divide and conquer, float64) to slicer/linalg/lapack.ts.
 *
 * Exports:
 *   eigh(a: Float64Array, n: number) -> { values: Float64Array, vectors: Float64Array }
 *     a: n*n symmetric matrix, row-major (the lower triangle in row-major order is the
 *        upper triangle in LAPACK's column-major order; the input is not modified).
 *     values:  n eigenvalues, DESCENDING.
 *     vectors: n*n row-major, vectors[i*n + j] = component i of the eigenvector of values[j].
 *     Throws on a wrong argument, on allocation failure and when dsyevd reports info != 0.
 *   implementation() -> string  (OpenBLAS's config and core name when OpenBLAS provides LAPACK,
 *                                else "LAPACK")
 *
 * Built on demand by `npm run build:lapack` (native/build-lapack.js); never at install time.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <node_api.h>

/* Fortran LAPACK symbol (no LAPACKE header needed). Hidden string-length arguments of
 * the two CHARACTER*1 parameters are passed explicitly, as gfortran expects. */
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
                    double *w, double *work, const int *lwork, int *iwork, const int *liwork,
                    int *info, size_t jobz_len, size_t uplo_len);

#define CHECK_NAPI(env, call)                                   \
  do {                                                          \
    if ((call) != napi_ok) {                                    \
      napi_throw_error((env), NULL, "sliceserve_lapack: N-API call failed: " #call); \
      return NULL;                                              \
    }                                                           \
  } while (0)

static napi_value make_f64_array(napi_env env, size_t length, double **data) {
  napi_value buffer, array;
  void *raw = NULL;
  if (napi_create_arraybuffer(env, length * sizeof(double), &raw, &buffer) != napi_ok) return NULL;
  if (napi_create_typedarray(env, napi_float64_array, length, buffer, 0, &array) != napi_ok) return NULL;
  *data = (double *)raw;
  return array;
}

static napi_value eigh(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK_NAPI(env, napi_get_cb_info(env, cbinfo, &argc, argv, NULL, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "eigh(a, n): expected 2 arguments");
    return NULL;
  }
  bool is_typed = false;
  CHECK_NAPI(env, napi_is_typedarray(env, argv[0], &is_typed));
  if (!is_typed) {
    napi_throw_type_error(env, NULL, "eigh(a, n): a must be a Float64Array");
    return NULL;
  }
  napi_typedarray_type type;
  size_t length = 0, offset = 0;
  void *in_data = NULL;
  napi_value in_buffer;
  CHECK_NAPI(env, napi_get_typedarray_info(env, argv[0], &type, &length, &in_data, &in_buffer, &offset));
  if (type != napi_float64_array) {
    napi_throw_type_error(env, NULL, "eigh(a, n): a must be a Float64Array");
    return NULL;
  }
  int64_t n64 = 0;
  CHECK_NAPI(env, napi_get_value_int64(env, argv[1], &n64));
  if (n64 < 1 || (uint64_t)n64 * (uint64_t)n64 != (uint64_t)length) {
    napi_throw_range_error(env, NULL, "eigh(a, n): n must be >= 1 and a.length must equal n*n");
    return NULL;
  }
  /* dsyevd needs lwork = 1 + 6n + 2n^2 as a 32-bit int. */
  if ((double)n64 * (double)n64 * 2.0 + 6.0 * (double)n64 + 1.0 > (double)INT_MAX) {
    napi_throw_range_error(env, NULL, "eigh(a, n): n too large for 32-bit LAPACK workspace");
    return NULL;
  }
  const int n = (int)n64;
  const size_t nn = (size_t)n * (size_t)n;

  double *a = (double *)malloc(nn * sizeof(double));
  double *w = (double *)malloc((size_t)n * sizeof(double));
  if (a == NULL || w == NULL) {
    free(a);
    free(w);
    napi_throw_error(env, NULL, "eigh: out of memory");
    return NULL;
  }
  memcpy(a, in_data, nn * sizeof(double));

  /* Workspace query, then the decomposition. 'L' in column-major = upper triangle of the
   * row-major input; the caller symmetrises the matrix, so either triangle is the same. */
  const char jobz = 'V', uplo = 'L';
  int lwork = -1, liwork = -1, info = 0, iwork_query = 0;
  double work_query = 0.0;
  dsyevd_(&jobz, &uplo, &n, a, &n, w, &work_query, &lwork, &iwork_query, &liwork, &info, 1, 1);
  if (info != 0) {
    free(a);
    free(w);
    napi_throw_error(env, NULL, "eigh: dsyevd workspace query failed");
    return NULL;
  }
  lwork = (int)work_query;
  liwork = iwork_query;
  double *work = (double *)malloc((size_t)lwork * sizeof(double));
  int *iwork = (int *)malloc((size_t)liwork * sizeof(int));
  if (work == NULL || iwork == NULL) {
    free(a);
    free(w);
    free(work);
    free(iwork);
    napi_throw_error(env, NULL, "eigh: out of memory for the dsyevd workspace");
    return NULL;
  }
  dsyevd_(&jobz, &uplo, &n, a, &n, w, work, &lwork, iwork, &liwork, &info, 1, 1);
  free(work);
  free(iwork);
  if (info != 0) {
    char message[128];
    snprintf(message, sizeof message, "eigh: dsyevd failed to converge (info = %d)", info);
    free(a);
    free(w);
    napi_throw_error(env, NULL, message);
    return NULL;
  }

  double *values = NULL, *vectors = NULL;
  napi_value values_js = make_f64_array(env, (size_t)n, &values);
  napi_value vectors_js = values_js == NULL ? NULL : make_f64_array(env, nn, &vectors);
  if (values_js == NULL || vectors_js == NULL) {
    free(a);
    free(w);
    napi_throw_error(env, NULL, "eigh: could not allocate the result arrays");
    return NULL;
  }
  /* dsyevd: ascending w, column k of a (a[i + k*n]) is the k-th eigenvector.
   * Output: descending, vectors[i*n + j] = component i of eigenvector j. */
  for (int j = 0; j < n; j++) {
    const int k = n - 1 - j;
    values[j] = w[k];
    const double *column = a + (size_t)k * (size_t)n;
    for (int i = 0; i < n; i++) vectors[(size_t)i * (size_t)n + (size_t)j] = column[i];
  }
  free(a);
  free(w);

  napi_value result;
  CHECK_NAPI(env, napi_create_object(env, &result));
  CHECK_NAPI(env, napi_set_named_property(env, result, "values", values_js));
  CHECK_NAPI(env, napi_set_named_property(env, result, "vectors", vectors_js));
  return result;
}

static napi_value implementation(napi_env env, napi_callback_info info) {
  (void)info;
  typedef char *(*config_fn)(void);
  config_fn get_config = (config_fn)dlsym(RTLD_DEFAULT, "openblas_get_config");
  config_fn get_core = (config_fn)dlsym(RTLD_DEFAULT, "openblas_get_corename");
  char text[320];
  if (get_config != NULL) {
    snprintf(text, sizeof text, "%s (core %s)", get_config(), get_core != NULL ? get_core() : "unknown");
  } else {
    snprintf(text, sizeof text, "LAPACK");
  }
  napi_value out;
  CHECK_NAPI(env, napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &out));
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"eigh", NULL, eigh, NULL, NULL, NULL, napi_default, NULL},
      {"implementation", NULL, implementation, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK_NAPI(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
