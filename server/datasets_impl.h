/* datasets_impl.h — internals of server/datasets.c, exposed for its unit tests
 * (tests/unit/test_srv_datasets.c). Not an interface: use server/datasets.h. */
#ifndef SRV_DATASETS_IMPL_H
#define SRV_DATASETS_IMPL_H

#include <stddef.h>

/* Normalizes the path of an archive entry: '/'-separated, empty and "." components dropped
 * (tar -C dir . writes "./cls/x.png"). Returns
 *    1  usable: out (n bytes) holds the components joined by '/';
 *    0  to skip: a hidden component (starting with '.'; *hidden = 1), a __MACOSX/ component
 *       (*hidden = 1), or nothing left (a "./" entry; *hidden = 0);
 *   -1  refused: *why (static) says why — an absolute path, "..", a backslash or a control
 *       character, longer than max_path bytes, a component over 255 bytes, more than max_depth
 *       components. */
int srv__dataset_path_norm(const char *in, int max_path, int max_depth, char *out, size_t n,
                           int *hidden, const char **why);

/* The layout of a set of normalized image paths (see datasets.h). */
typedef struct srv__ds_layout {
    int strip;   /* 1: every path starts with one wrapper folder, dropped */
    int splits;  /* 1: train/ (and test/) */
    int labeled; /* 1: class folders */
    int has_test;
} srv__ds_layout;

/* Decides the layout of n normalized paths (srv__dataset_path_norm). 0, or -1 with why (a
 * message naming an offending path): mixed depths, too deep, train/ or test/ beside other
 * folders, a test split without train/, test classes different from train classes. */
int srv__dataset_layout(char *const *paths, int n, srv__ds_layout *lay, char *why, size_t whyn);

/* Where `path` goes under layout lay: split ("train", "test", or "" for a set without splits),
 * class folder (the class, or "_unlabeled") and file name, each into its buffer. 0, or -1 when
 * a buffer is too small or the path does not fit the layout. */
int srv__dataset_place(const srv__ds_layout *lay, const char *path, char *split, size_t ns,
                       char *cls, size_t nc, char *base, size_t nb);

#endif
