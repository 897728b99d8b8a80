# common.gp — shared style of the attnbench figures, loaded by every plots/*.gp.
#
# `attnbench plot` runs each script as
#   gnuplot -e "datadir='D'; outfile='D/NAME'; term='png'; footnote='...'; plotsdir='P'" P/NAME.gp
# By hand, from the repository root:  gnuplot -e "datadir='results/quick'" plots/NAME.gp
# term: png (pngcairo when built in, else png), svg or pdf; the output is outfile.'.'.term.
#
# Colours: a method's colour, point type and dash are fixed by its position in
# methods.txt (the 9th column or so of every figure file: method_idx), so each
# method looks the same in every figure.

if (!exists("datadir"))  datadir = '.'
if (!exists("term"))     term = 'png'
if (!exists("footnote")) footnote = ''
if (!exists("outfile"))  outfile = datadir.'/figure'

# ---- terminal: sizes and fonts readable when scaled to one paper column ----
# A single figure is ~4.2 x 2.9 in (PNG 1200 x 825 px); fonts are ~9 pt once
# scaled to a 3.4 in column. figw/figh scale the canvas (multi-panel figures
# set them and `eval set_term` again); fnfont is the footnote's font.
if (!exists("figw")) figw = 1.0
if (!exists("figh")) figh = 1.0
if (term eq 'svg' || term eq 'pdf') { } else { term = 'png' }
pngterm = (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) ? 'pngcairo' : 'png'
if (term eq 'svg') { fnfont = ',9' } else { if (term eq 'pdf') { fnfont = ',6.5' } else { fnfont = ',15' } }
set_term = "if (term eq 'svg') { " . \
    "set terminal svg size 640*figw,440*figh font 'Helvetica,12' linewidth 1.4 background rgb 'white' noenhanced " . \
    "} else { if (term eq 'pdf') { " . \
    "set terminal pdfcairo size 4.2*figw,2.9*figh font 'Helvetica,9' linewidth 1.4 noenhanced " . \
    "} else { if (pngterm eq 'pngcairo') { " . \
    "set terminal pngcairo size 1200*figw,825*figh font 'Helvetica,22' linewidth 2.6 background rgb 'white' noenhanced " . \
    "} else { set terminal png size 1200*figw,825*figh font 'Helvetica,18' linewidth 2 noenhanced } } }; " . \
    "set output outfile . '.' . term"
eval set_term

# ---- palette: Okabe-Ito (colour-blind safe) then extras; index 1 is "dense" when present ----
palette = "#000000 #0072B2 #D55E00 #009E73 #CC79A7 #E69F00 #56B4E9 #8C564B #7F7F7F #B8860B #1B3B6F #A6192E"
points = "7 5 9 11 13 15 4 6 8 10 12 14"
mcolor(i) = word(palette, (int(i) - 1) % words(palette) + 1)
mpoint(i) = word(points, (int(i) - 1) % words(points) + 1) + 0
mdash(i)  = 1 + ((int(i) - 1) / words(palette)) % 5

# ---- axes, grid, key ----
set border 3 lw 1 lc rgb '#444444'
set tics nomirror out scale 0.6 textcolor rgb '#222222'
set grid xtics ytics mxtics mytics lw 1 lc rgb '#e4e4e4', lw 1 lc rgb '#f2f2f2'
set key outside right top vertical Left reverse samplen 2.2 spacing 1.1 width 1 noautotitle
set pointsize 1.2
set bmargin 5.2

# footnote: data file, host, threads, commit
set label 99 footnote at screen 0.01, screen 0.02 left front textcolor rgb '#555555' font fnfont

# Percent tics for densities given as a fraction on a log x axis.
pct(x) = 100.0 * x

# scan_blocks: for the file `datafile`, with the method name in column `ncol`
# and method_idx in column `icol`, set nblocks, names (one word per block, in
# block order) and idxs (method_idx per block). Call: eval scan_blocks
scan_blocks = "stats datafile using 1 nooutput; nblocks = STATS_blocks; names = ''; idxs = ''; " . \
  "do for [b_ = 0:nblocks-1] { stats datafile index b_ using (nm_ = strcol(ncol), ix_ = column(icol), 0) nooutput; " . \
  "names = names . ' ' . nm_; idxs = idxs . sprintf(' %d', ix_) }"
bcolor(i) = mcolor(word(idxs, i) + 0)
bpoint(i) = mpoint(word(idxs, i) + 0)
bdash(i)  = mdash(word(idxs, i) + 0)

# scan_maxn: after scan_blocks, with seq_len in column `nncol`: bmaxn holds each
# block's largest seq_len (one word per block), gmaxn the largest of all.
scan_maxn = "bmaxn = ''; gmaxn = 0; do for [b_ = 0:nblocks-1] { " . \
  "stats datafile index b_ using nncol nooutput; bmaxn = bmaxn . sprintf(' %d', STATS_max); " . \
  "gmaxn = (STATS_max > gmaxn) ? STATS_max : gmaxn }"
bmax(i) = word(bmaxn, i) + 0
# the largest-N rows of block i only (y when column nncol is bmax(i), else undefined)
atmaxn(i, y) = (column(nncol) == bmax(i)) ? y : NaN
# key title: the method, plus its N when it stops short of the largest
btitle(i) = word(names, i) . ((bmax(i) < gmaxn) ? ' (N=' . ntics(bmax(i)) . ')' : '')
# 1024 -> 1k, 65536 -> 64k
ntics(n) = (int(n) % 1024 == 0) ? sprintf('%dk', int(n) / 1024) : sprintf('%d', int(n))
