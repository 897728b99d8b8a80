# breakeven.gp — where does each method beat dense? One row per method
# (methods.txt order, dense left out), one column per (sequence length,
# target density): the speedup over dense attention on the same workload,
# select() included, as a coloured cell on a log scale centred at 1 (red:
# slower than dense, green: faster; clamped to 1/8..8) with the value printed
# in it. The marker says whether the 95% interval (bootstrap over rounds) of
# the paired ratio lies above 1 (filled triangle up), below 1 (filled
# triangle down), or holds 1 / is unknown (open circle). A grey cell has no
# timed status-ok point; its label says why (calib_failed, unsupported,
# untimed, a failure status; blank when the method did not run there).
# Points of the file's primary device only.
# Data: DATADIR/breakeven.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/breakeven.tsv'

# the grid: one data line per cell, row by row (ncols lines per row)
stats datafile using 1 nooutput
ncols = int(STATS_max) + 1
stats datafile using 2 nooutput
nrows = int(STATS_max) + 1
# row labels: the method of the row's first cell
set ytics () scale 0
do for [r = 0:nrows-1] {
    stats datafile every ::(r * ncols)::(r * ncols) using (nm_ = strcol(12), 0) nooutput
    set ytics add (nm_ r)
}
# column labels: the target density of row 0's cells; N of each group of
# columns above the map, dark lines between the groups
set xtics () scale 0
colN = ''
do for [k = 0:ncols-1] {
    stats datafile every ::k::k using (n_ = $8, tl_ = (valid(9) ? sprintf('%g%%%%', 100.0 * $9) : 'native'), 0) nooutput
    set xtics add (tl_ k)
    colN = colN . sprintf(' %d', n_)
}
g0 = 0
do for [k = 1:ncols] {
    if (k == ncols || word(colN, k + 1) + 0 != word(colN, k) + 0) {
        set label sprintf('N = %s', ntics(word(colN, k) + 0)) at first (g0 + k - 1) / 2.0, graph 1 \
            center offset 0, 0.75 front
        if (k < ncols) { set arrow from first k - 0.5, graph 0 to first k - 0.5, graph 1 nohead lw 3 lc rgb '#444444' front }
        g0 = k
    }
}

# canvas: about 0.42 in per column and 0.27 in per row (one paper column
# at 8 columns or fewer)
figw = (ncols * 0.42 + 2.6) / 4.2
figw = (figw < 1.0) ? 1.0 : figw
figh = (nrows * 0.27 + 2.2) / 2.9
figh = (figh < 1.0) ? 1.0 : figh
eval set_term

unset grid
set border 15 lw 1 lc rgb '#444444'
set xrange [-0.5 : ncols - 0.5]
set yrange [nrows - 0.5 : -0.5]
set xlabel 'target density (grouped by sequence length N)'
set tmargin (masktitle eq '') ? 4.2 : 5.6
set bmargin 7.6 + fnlines
# colour: log2 of the speedup, clamped to 1/8..8
set palette defined (-3 '#a50026', -2 '#d73027', -1 '#fc8d59', -0.25 '#fee08b', 0 '#f7f7f7', \
                     0.25 '#d9ef8b', 1 '#91cf60', 2 '#1a9850', 3 '#006837')
set cbrange [-3:3]
set cbtics ('1/8' -3, '1/4' -2, '1/2' -1, '1' 0, '2' 1, '4' 2, '8' 3) scale 0.6
set cblabel 'speedup over dense (x, log scale)'
set colorbox vertical user origin screen 1.0 - 0.95 / (4.2 * figw), screen 0.25 size screen 0.07 / (4.2 * figw), screen 0.5
set rmargin at screen 1.0 - 1.35 / (4.2 * figw)
cl(s) = (s > 8) ? 3 : ((s < 0.125) ? -3 : log(s) / log(2))
# the value in the cell: white on the dark ends of the scale
vlab(s) = (s >= 10) ? sprintf('%.0f', s) : sprintf('%.2f', s)
tcol(s) = (s > 4 || s < 0.25) ? 0xffffff : 0x111111
nlab(s) = (s eq 'not_run') ? '' : ((s eq 'calib_failed') ? 'calib.' : ((s eq 'unsupported') ? 'unsup.' : \
          ((s eq 'no_dense') ? 'no dense' : s)))
cellfont = (term eq 'png') ? ',19' : ((term eq 'svg') ? ',10' : ',7')
notefont = (term eq 'png') ? ',15' : ((term eq 'svg') ? ',8' : ',5.5')
# the markers' key on one line between the axis label and the footnote
set key at graph 0.5, character fnlines + 2.3 center center horizontal Left reverse samplen 1 spacing 1 width 2 maxrows 1 font notefont
set title 'Break-even map: speedup over dense, select() included' . mtitle_line offset 0, 1.0
set label 95 'cell: median speedup; marker: its 95% interval (bootstrap over rounds) against 1; grey: no timed ok point (label says why)' \
    at character 0.6, character fnlines + 0.55 left front textcolor rgb '#555555' font fnfont
# every cell grey first (a grey cell has no timed status-ok point), then the
# coloured ones over it
plot datafile using 1:2:(0.5):(0.5) with boxxyerror fs solid 1.0 border lc rgb '#ffffff' lw 1.5 lc rgb '#d9d9d9' notitle, \
     '' using 1:(valid(3) ? $2 : NaN):(0.5):(0.5):(cl($3)) with boxxyerror fs solid 1.0 border lc rgb '#ffffff' lw 1.5 lc palette notitle, \
     '' using ($1 - 0.1):2:(valid(3) ? vlab($3) : ''):(tcol($3)) with labels tc rgb variable font cellfont notitle, \
     '' using 1:2:(valid(3) ? '' : nlab(strcol(14))) with labels tc rgb '#555555' font notefont notitle, \
     '' using ($1 + 0.33):($6 == 1 ? $2 : NaN):(tcol($3)) with points pt 9 ps 1.0 lc rgb variable \
        title 'faster (95% interval > 1)', \
     '' using ($1 + 0.33):($6 == -1 ? $2 : NaN):(tcol($3)) with points pt 11 ps 1.0 lc rgb variable \
        title 'slower (95% interval < 1)', \
     '' using ($1 + 0.33):($6 == 0 ? $2 : NaN):(tcol($3)) with points pt 6 ps 0.9 lc rgb variable \
        title 'not significant, or no interval'
