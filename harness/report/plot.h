/* plot.h — every figure of a results file, drawn with gnuplot, and the
 * index page (plot.c); the command line is harness/cli/plot.c. */
#ifndef AB_PLOT_H
#define AB_PLOT_H

#define AB_PLOT_MAX_FORMATS 3

typedef struct ab_plot_opts {
    const char *path;                     /* the results file */
    const char *dir;                      /* the output directory */
    char formats[AB_PLOT_MAX_FORMATS][8]; /* "png", "svg", "pdf", no repeats */
    int n_formats;
    const char *gnuplot; /* --gnuplot: a path or a name on PATH; NULL: gnuplot on PATH */
    int gallery;         /* draw the mask gallery (`attnbench mask --gallery`) */
} ab_plot_opts;

/* Export into o->dir, draw every plots/NAME.gp, the gallery, index.html.
 * 0 drawn, 1 gnuplot failed on a script, 2 after an error message. */
int ab_plot(const ab_plot_opts *o);
#endif
