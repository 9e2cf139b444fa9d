/* fficube._kernels: the one transposition numpy does slowly.
 *
 * Assembly turns a group of FFIs' rows, one plane per FFI layer, into the cube's
 * pixel-major order: dst[p * dst_stride + dst_offset + g] = src[g * plane_stride + p].
 * numpy copies such a transposition one element at a time, reading each from a
 * different plane (measured 1.1 GB/s for 128 planes of 16 x 2136 pixels); 4 x 4 tiles
 * of SSE2 registers, walked so that each tile's four source lines stay in cache for
 * the next tile, move the same bytes 1.3-1.6 times faster.  Values are copied as
 * opaque 32-bit words (the cube's big-endian floats are never interpreted).
 *
 * Optional: fficube.assemble falls back to numpy when this module was not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define HAVE_SSE2 1
#endif

/* Tiles are walked in patches of PASS pixels x SPAN planes (8 KiB read, 8 KiB written):
 * the source lines of a patch stay in L1 cache between its tiles, and its destination
 * lines are written whole before the next patch.  Measured (128 planes of 16 x 2136,
 * destination runs of 200, 400 and 2000 words): this patch moved 1.6-1.7 GB/s where
 * whole-plane passes of 256 pixels fell to 0.65 GB/s at some destination strides. */
#define PASS 64
#define SPAN 32

/* The sum of the words copied, as FITS checksums read them (big-endian), comes free
 * with the copy: the words are in registers already, and a separate pass over the
 * block (numpy) read every byte from memory once more (measured, 12,000 FFIs: 21% of
 * a build's busy thread time).  Bytes are summed by their place in the word: 16-bit
 * lanes collect bytes 0 and 2 (``even``) and bytes 1 and 3 (``odd``) of each word,
 * and are emptied into 64-bit totals before they can overflow. */
static inline uint64_t be_word(uint32_t v)
{
    const uint8_t *b = (const uint8_t *)&v;
    return ((uint64_t)b[0] << 24) | ((uint64_t)b[1] << 16) | ((uint64_t)b[2] << 8) | (uint64_t)b[3];
}

#ifdef HAVE_SSE2
/* Adds of up to 255 per 16-bit lane before the lanes are emptied: 256 x 255 < 65536. */
#define FLUSH_EVERY 256

typedef struct {
    __m128i even, odd;  /* byte sums of the words since the last flush */
    int adds;
    uint64_t bytes[4];  /* totals of bytes 0..3 of the words */
} ByteSums;

static void flush(ByteSums *sums)
{
    uint16_t even[8], odd[8];
    _mm_storeu_si128((__m128i *)even, sums->even);
    _mm_storeu_si128((__m128i *)odd, sums->odd);
    for (int i = 0; i < 8; i += 2) {  /* lanes alternate: low then high half of a word */
        sums->bytes[0] += even[i];
        sums->bytes[2] += even[i + 1];
        sums->bytes[1] += odd[i];
        sums->bytes[3] += odd[i + 1];
    }
    sums->even = sums->odd = _mm_setzero_si128();
    sums->adds = 0;
}

static inline void add_words(ByteSums *sums, __m128i words)
{
    const __m128i low = _mm_set1_epi16(0x00FF);
    sums->even = _mm_add_epi16(sums->even, _mm_and_si128(words, low));
    sums->odd = _mm_add_epi16(sums->odd, _mm_srli_epi16(words, 8));
}

static inline void tile4(const uint32_t *s, size_t ss, uint32_t *d, size_t ds, ByteSums *sums)
{
    __m128i r0 = _mm_loadu_si128((const __m128i *)s);
    __m128i r1 = _mm_loadu_si128((const __m128i *)(s + ss));
    __m128i r2 = _mm_loadu_si128((const __m128i *)(s + 2 * ss));
    __m128i r3 = _mm_loadu_si128((const __m128i *)(s + 3 * ss));
    add_words(sums, r0);
    add_words(sums, r1);
    add_words(sums, r2);
    add_words(sums, r3);
    if ((sums->adds += 4) >= FLUSH_EVERY)
        flush(sums);
    __m128i t0 = _mm_unpacklo_epi32(r0, r1), t1 = _mm_unpacklo_epi32(r2, r3);
    __m128i t2 = _mm_unpackhi_epi32(r0, r1), t3 = _mm_unpackhi_epi32(r2, r3);
    _mm_storeu_si128((__m128i *)d, _mm_unpacklo_epi64(t0, t1));
    _mm_storeu_si128((__m128i *)(d + ds), _mm_unpackhi_epi64(t0, t1));
    _mm_storeu_si128((__m128i *)(d + 2 * ds), _mm_unpacklo_epi64(t2, t3));
    _mm_storeu_si128((__m128i *)(d + 3 * ds), _mm_unpackhi_epi64(t2, t3));
}
#endif

/* Copies, and returns the sum of the big-endian words copied (no overflow below 2**32 words). */
static uint64_t transpose(const uint32_t *src, size_t planes, size_t ss, size_t pixels, uint32_t *dst, size_t ds)
{
    size_t g4 = 0, p4 = 0;
    uint64_t total = 0;
#ifdef HAVE_SSE2
    ByteSums sums = {_mm_setzero_si128(), _mm_setzero_si128(), 0, {0, 0, 0, 0}};
    g4 = planes & ~(size_t)3;
    p4 = pixels & ~(size_t)3;
    for (size_t p0 = 0; p0 < p4; p0 += PASS) {
        size_t p1 = p0 + PASS < p4 ? p0 + PASS : p4;
        for (size_t g0 = 0; g0 < g4; g0 += SPAN) {
            size_t g1 = g0 + SPAN < g4 ? g0 + SPAN : g4;
            for (size_t p = p0; p < p1; p += 4)
                for (size_t g = g0; g < g1; g += 4)
                    tile4(src + g * ss + p, ss, dst + p * ds + g, ds, &sums);
        }
    }
    flush(&sums);
    total = (sums.bytes[0] << 24) + (sums.bytes[1] << 16) + (sums.bytes[2] << 8) + sums.bytes[3];
#endif
    /* What the tiles leave: the last planes (fewer than 4), then the last pixels. */
    for (size_t p0 = 0; p0 < p4; p0 += PASS) {
        size_t p1 = p0 + PASS < p4 ? p0 + PASS : p4;
        for (size_t g = g4; g < planes; g++)
            for (size_t p = p0; p < p1; p++) {
                uint32_t v = src[g * ss + p];
                dst[p * ds + g] = v;
                total += be_word(v);
            }
    }
    for (size_t p = p4; p < pixels; p++)
        for (size_t g = 0; g < planes; g++) {
            uint32_t v = src[g * ss + p];
            dst[p * ds + g] = v;
            total += be_word(v);
        }
    return total;
}

PyDoc_STRVAR(transpose_doc,
"transpose(src, dst, planes, plane_stride, pixels, dst_stride, dst_offset)\n\n"
"Set ``dst[p * dst_stride + dst_offset + g] = src[g * plane_stride + p]`` for\n"
"``g < planes`` and ``p < pixels``, indices in 4-byte words of the two contiguous\n"
"buffers; return the sum of the words copied, each read as a big-endian unsigned\n"
"integer (not folded: see fficube.checksum).  Raises ValueError if an index would\n"
"fall outside a buffer.  Runs without the GIL.");

static PyObject *py_transpose(PyObject *self, PyObject *args)
{
    Py_buffer src, dst;
    Py_ssize_t planes, ss, pixels, ds, offset;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*w*nnnnn", &src, &dst, &planes, &ss, &pixels, &ds, &offset))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t src_words = src.len / 4, dst_words = dst.len / 4;
    if (planes < 0 || ss < 0 || pixels < 0 || ds < 0 || offset < 0) {
        PyErr_SetString(PyExc_ValueError, "negative size or stride");
    } else if (((uintptr_t)src.buf | (uintptr_t)dst.buf) % 4) {
        PyErr_SetString(PyExc_ValueError, "buffers must be aligned to 4 bytes");
    } else if ((uint64_t)planes * (uint64_t)pixels >= ((uint64_t)1 << 32)) {
        PyErr_SetString(PyExc_ValueError, "more than 2**32 words in one call: the sum could overflow");
    } else if (planes && pixels
               && ((planes - 1) * ss + pixels > src_words || offset + (pixels - 1) * ds + planes > dst_words
                   || planes > ds)) {
        PyErr_SetString(PyExc_ValueError, "transposition falls outside its buffers");
    } else {
        uint64_t total = 0;
        if (planes && pixels) {
            Py_BEGIN_ALLOW_THREADS
            total = transpose((const uint32_t *)src.buf, (size_t)planes, (size_t)ss, (size_t)pixels,
                              (uint32_t *)dst.buf + offset, (size_t)ds);
            Py_END_ALLOW_THREADS
        }
        result = PyLong_FromUnsignedLongLong(total);
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

static PyMethodDef methods[] = {
    {"transpose", py_transpose, METH_VARARGS, transpose_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "fficube._kernels", "Compiled kernels of fficube's assembly.", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void)
{
    return PyModule_Create(&module);
}
