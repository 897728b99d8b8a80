# recall_vs_density.gp — attention-mass recall and top-k recall vs achieved
# density, two panels, one line per method at its largest sequence length.
# Data: DATADIR/recall_vs_density.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/recall_vs_density.tsv'
ncol = 6; icol = 7; nncol = 4
eval scan_blocks
eval scan_maxn

set logscale x 10
set xtics ('0.1' 0.1, '0.2' 0.2, '0.5' 0.5, '1' 1, '2' 2, '5' 5, '10' 10, '20' 20, '50' 50, '100' 100)
stats datafile using 1 nooutput  # before any range is set: ranges limit stats
set xrange [pct(STATS_min) / 1.5 : 110]
set yrange [0:1.04]
set ytics 0.2
set xlabel 'achieved density (%)'

npanels = 2
ptitle = sprintf('Attention recall vs density (N = %s)', ntics(gmaxn)) . mtitle_inline
eval panels_begin
do for [k = 1:2] {
    if (k == 1) {
        set title 'attention-mass recall'
        set ylabel 'recall (fraction)'
        eval keyat
    } else {
        set title 'top-k recall (exact top-k keys kept)'
        unset ylabel
        unset key
    }
    plot for [i=1:nblocks] datafile index (i-1) using (pct($1)):(atmaxn(i, column(k + 1))) \
         with linespoints lc rgb bcolor(i) pt bpoint(i) dt bdash(i) title btitle(i)
}
unset multiplot
