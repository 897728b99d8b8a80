/* draw.h — the pictures of `attnbench mask`: which (query, key) pairs a
 * method keeps under a base mask (draw.c); the command line is
 * harness/cli/mask.c. */
#ifndef AB_DRAW_H
#define AB_DRAW_H

#include <stdint.h>

typedef struct ab_draw_opts {
    const char *method;        /* the method to draw; NULL: the gallery of every CPU prefill method */
    const char *out;           /* FILE.png (one method) or DIR (gallery) */
    const char *spec;          /* the base mask */
    int n, heads, head;        /* sequence length, heads of the problem, head drawn */
    uint64_t seed;             /* the haystack's and the base mask's */
    double density;            /* calibrate the knob to this density; NaN: the defaults */
    const char *const *params; /* "k=v" settings of the method */
    int nparams;
} ab_draw_opts;

/* Draw (options already checked for range). 0 drawn, 1 a method or gnuplot
 * failed, 2 after an error message (unknown method or parameter, bad mask). */
int ab_draw(const ab_draw_opts *o);
#endif
