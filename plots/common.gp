# common.gp — shared style of the attnbench figures, loaded by every plots/*.gp.
#
# `attnbench plot` runs each script as
#   gnuplot -e "datadir='D'; datafile='D/NAME[--SLUG].tsv'; outfile='D/NAME[--SLUG]'; term='png';
#               footnote='...'; footnote2='...'; masktitle='...'; plotsdir='P'" P/NAME.gp
# By hand, from the repository root:  gnuplot -e "datadir='results/quick'" plots/NAME.gp
# (datafile: one base mask's copy of the figure data, default DATADIR/NAME.tsv)
# term: png (pngcairo when built in, else png), svg or pdf; the output is outfile.'.'.term.
#
# Colours: a method's colour is its family's (methods.txt column 3: dense,
# static, block, token, hashing, lowrank, linear), its point type and dash its
# place inside the family (column 4); the figure files give each curve its
# line in methods.txt (method_idx), so each method looks the same in every
# figure. A methods.txt of one column (an older export) colours by line.

if (!exists("datadir"))  datadir = '.'
if (!exists("term"))     term = 'png'
if (!exists("footnote")) footnote = ''
if (!exists("footnote2")) footnote2 = ''
# footnote3: a timing figure's third footnote line (export's "# note:": the
# untimed points it leaves out, the timing flags of those it draws); '' = none
if (!exists("footnote3")) footnote3 = ''
fnlines = (footnote3 eq '') ? 2 : 3
if (!exists("outfile"))  outfile = datadir.'/figure'
# masktitle: the base mask of the figure ("document:8"), set by `attnbench
# plot` when the file holds several base masks or a non-causal one; a
# one-panel title gets it on a line of its own (mtitle_line), a multi-panel
# figure's title (wide) at its end (mtitle_inline)
if (!exists("masktitle")) masktitle = ''
mtitle_line = (masktitle eq '') ? '' : "\nbase mask: " . masktitle
mtitle_inline = (masktitle eq '') ? '' : ' [base mask: ' . masktitle . ']'

# ---- terminal: sizes and fonts readable when scaled to one paper column ----
# A single figure is ~4.2 x 2.9 in (PNG 1200 x 825 px); fonts are ~9 pt once
# scaled to a 3.4 in column. figw/figh scale the canvas (multi-panel figures
# set them and `eval set_term` again); fnfont is the footnote's font.
# Many methods: the key wraps into two columns of at most keyrows entries
# (methods.txt lists one method per line).
nmethods = 0
if (exists("datadir")) { nmethods = int(system(sprintf("cat '%s/methods.txt' 2>/dev/null | wc -l", datadir))) }
keycols = (nmethods > 15) ? 2 : 1
keyrows = (nmethods + keycols - 1) / keycols
if (keyrows < 1) { keyrows = 1 }
# a single-panel figure widens for a two-column key
if (!exists("figw")) figw = 1.0 + 0.45 * (keycols - 1)
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

# ---- palette: Okabe-Ito (colour-blind safe), one colour per family, grey for unknown ----
palette = "#000000 #0072B2 #D55E00 #009E73 #CC79A7 #E69F00 #56B4E9 #7F7F7F #8C564B #B8860B #1B3B6F #A6192E"
families = "dense static block token hashing lowrank linear other"
points = "7 5 9 11 13 15 4 6 8 10 12 14"
# per line of methods.txt: colour (family) and marker (place in family) indices
mcol_s = ''
mpt_s = ''
mfams = ''
if (nmethods > 0) { \
  mcol_s = system(sprintf("awk -F'\t' '{printf \" %%d\", (NF >= 3 ? $3 : NR)}' '%s/methods.txt'", datadir)); \
  mpt_s = system(sprintf("awk -F'\t' '{printf \" %%d\", (NF >= 4 ? $4 : NR)}' '%s/methods.txt'", datadir)); \
  mfams = system(sprintf("awk -F'\t' 'NF >= 3 && !s[$3]++ {printf \" %%d\", $3}' '%s/methods.txt'", datadir)) }
mcol(i) = (int(i) >= 1 && int(i) <= words(mcol_s)) ? word(mcol_s, int(i)) + 0 : int(i)
mpt(i)  = (int(i) >= 1 && int(i) <= words(mpt_s)) ? word(mpt_s, int(i)) + 0 : int(i)
mcolor(i) = word(palette, (mcol(i) - 1) % words(palette) + 1)
mpoint(i) = word(points, (mpt(i) - 1) % words(points) + 1) + 0
mdash(i)  = 1 + ((mpt(i) - 1) / words(points)) % 5
# the family legend: "families:" then one coloured name per family present,
# at the top left of the canvas (labels 80-88); every figure gets it
famx_ = 0
if (words(mfams) > 0) { set label 80 'families:' at screen 0.004, screen 0.985 left front textcolor rgb '#555555' font fnfont; famx_ = 7 }
do for [f_ = 1:words(mfams)] { \
  fi_ = word(mfams, f_) + 0; fw_ = word(families, fi_ <= words(families) ? fi_ : words(families)); \
  set label 80 + f_ fw_ at screen 0.004, screen 0.985 offset character famx_, 0 left front \
      textcolor rgb word(palette, fi_) font fnfont; \
  famx_ = famx_ + 0.7 * (strlen(fw_) + 1.5) }

# ---- axes, grid, key ----
set border 3 lw 1 lc rgb '#444444'
set tics nomirror out scale 0.6 textcolor rgb '#222222'
set grid xtics ytics mxtics mytics lw 1 lc rgb '#e4e4e4', lw 1 lc rgb '#f2f2f2'
set key outside right top vertical Left reverse samplen 2.2 spacing 1.1 width 1 noautotitle maxrows keyrows
set pointsize 1.2

# footnote, two lines: (1) data file, host, CPU/GPU, threads, commit;
# (2) how many points were left out for a non-ok status; and a third, (3)
# footnote3, when plot gives one (the bottom margin grows by a line). Placed
# in character units from the bottom so it keeps its place whatever the
# canvas height. Labels 97-99 are the footnote's.
set bmargin 4.8 + fnlines
set label 98 footnote at character 0.6, character fnlines - 0.45 left front textcolor rgb '#555555' font fnfont
set label 99 footnote2 at character 0.6, character fnlines - 1.45 left front textcolor rgb '#555555' font fnfont
if (fnlines > 2) { set label 97 footnote3 at character 0.6, character 0.55 left front textcolor rgb '#555555' font fnfont }

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
# a GPU series ("method@gpu" in a file with several devices) is dashed
bdash(i)  = strstrt(word(names, i), '@gpu') ? 2 : mdash(word(idxs, i) + 0)

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

# scan_nums: the sorted distinct values of numeric column `ucol` over the
# whole `datafile` (every block) into the string `nums` (" 1024 2048 ..."),
# their count in nnums. Call: eval scan_nums
scan_nums = "stats datafile using ucol nooutput; u_max = STATS_max; u_prev = STATS_min - 1; " . \
  "nums = ''; nnums = 0; while (u_prev < u_max) { " . \
  "stats datafile using (column(ucol) > u_prev ? column(ucol) : NaN) nooutput; " . \
  "nums = nums . sprintf(' %.17g', STATS_min); nnums = nnums + 1; u_prev = STATS_min }"

# panels_begin: a multiplot of `npanels` panels, up to `maxcols` per row (3
# unless set), the canvas grown to keep each panel readable, and `keyin`
# inches of right margin for one shared key (0 = none; set before the call).
# `ptitle` is the figure title. Then per panel: set title, plot; end with
# `unset multiplot`. keyat places the shared key in the right margin.
if (!exists("maxcols")) maxcols = 3
keyin = 1.3 * keycols
panels_begin = "pcols = (npanels > maxcols) ? maxcols : npanels; prows = (npanels + pcols - 1) / pcols; " . \
  "figw = (pcols == 1 ? 1.0 : 0.62 * pcols + 0.25) + keyin / 4.2; figh = (prows == 1 ? 1.0 : 0.78 * prows + 0.22); " . \
  "eval set_term; pright = 1.0 - (keyin + 0.12) / (4.2 * figw); " . \
  "set multiplot layout prows, pcols title ptitle margins screen 0.5 / (4.2 * figw), pright, " . \
  "(0.62 + 0.12 * (fnlines - 2)) / (2.9 * figh), 1.0 - 0.42 / (2.9 * figh) spacing screen 0.42 / (4.2 * figw), 0.5 / (2.9 * figh)"
keyat = "set key at screen pright + 0.1 / (4.2 * figw), screen 1.0 - 0.42 / (2.9 * figh) left top"
