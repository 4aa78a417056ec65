/* mkdigits.c — test helper: writes the first N MNIST test digits as PNG (libpng) and JPEG
 * (libjpeg-turbo, quality Q) files for the integration tests, plus labels.txt ("<i> <label>"
 * per line). Built by the test scripts with the system compiler; no dynd code involved, so the
 * images are produced independently of the decoder under test.
 *
 *   mkdigits <t10k-images-idx3-ubyte> <t10k-labels-idx1-ubyte> <outdir> <N> [quality=95] [first=0]
 * Writes <outdir>/<i>.png, <outdir>/<i>.jpg, <outdir>/<i>.u8 (784 raw bytes), labels.txt, for
 * i = 0..N-1 holding images first..first+N-1 of the file.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h> /* after stdio.h: it uses FILE and size_t */
#include <png.h>

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return perror(path), NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)sz);
    if (!p || fread(p, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        free(p);
        return NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return p;
}

static int write_png(const char *path, const uint8_t *px, int w, int h) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        fclose(f);
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, (png_bytep)(px + y * w));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return fclose(f);
}

static int write_jpeg(const char *path, const uint8_t *px, int w, int h, int q) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&ci);
    jpeg_stdio_dest(&ci, f);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = 1;
    ci.in_color_space = JCS_GRAYSCALE;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, q, TRUE);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)(px + ci.next_scanline * (unsigned)w);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    return fclose(f);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s images labels outdir N [quality] [first]\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[4]), q = argc > 5 ? atoi(argv[5]) : 95, first = argc > 6 ? atoi(argv[6]) : 0;
    size_t ni, nl;
    uint8_t *im = slurp(argv[1], &ni), *lb = slurp(argv[2], &nl);
    if (!im || !lb || ni < 16 || nl < 8) return fprintf(stderr, "cannot read the IDX files\n"), 1;
    int count = im[4] << 24 | im[5] << 16 | im[6] << 8 | im[7];
    int h = im[8] << 24 | im[9] << 16 | im[10] << 8 | im[11];
    int w = im[12] << 24 | im[13] << 16 | im[14] << 8 | im[15];
    if (first < 0 || n > count - first || ni < 16 + (size_t)count * (size_t)(w * h) || nl < 8 + (size_t)count)
        return fprintf(stderr, "IDX files too short\n"), 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/labels.txt", argv[3]);
    FILE *lf = fopen(path, "w");
    if (!lf) return perror(path), 1;
    for (int i = 0; i < n; i++) {
        const uint8_t *px = im + 16 + (size_t)(first + i) * (size_t)(w * h);
        snprintf(path, sizeof path, "%s/%d.png", argv[3], i);
        if (write_png(path, px, w, h)) return perror(path), 1;
        snprintf(path, sizeof path, "%s/%d.jpg", argv[3], i);
        if (write_jpeg(path, px, w, h, q)) return perror(path), 1;
        snprintf(path, sizeof path, "%s/%d.u8", argv[3], i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(px, 1, (size_t)(w * h), f) != (size_t)(w * h)) return perror(path), 1;
        fclose(f);
        fprintf(lf, "%d %d\n", i, lb[8 + first + i]);
    }
    fclose(lf);
    free(im);
    free(lb);
    return 0;
}
