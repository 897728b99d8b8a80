# recall_vs_density.gp — attention (mass) recall vs achieved density, one line
# per method (one segment per sequence length), density on a log axis in %.
# Data: DATADIR/recall_vs_density.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

datafile = datadir.'/recall_vs_density.tsv'
ncol = 6; icol = 7; nncol = 4
eval scan_blocks
eval scan_maxn

set logscale x 10
set xtics ('0.1' 0.1, '0.2' 0.2, '0.5' 0.5, '1' 1, '2' 2, '5' 5, '10' 10, '20' 20, '50' 50, '100' 100)
set xrange [*:110]
set yrange [0:1.04]
set ytics 0.2
set xlabel 'achieved density (% of allowed keys kept)'
set ylabel 'attention mass recall'
set title sprintf('Attention recall vs density (N = %s)', ntics(gmaxn))
plot for [i=1:nblocks] datafile index (i-1) using (pct($1)):(atmaxn(i, $2)) \
     with linespoints lc rgb bcolor(i) pt bpoint(i) dt bdash(i) title btitle(i)
