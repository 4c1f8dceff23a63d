"""`rlrun report=<folders>`: many run folders → grouped statistics across seeds (IQM with
stratified-bootstrap intervals), learning curves, performance profiles and reference scores.

stats.py holds the statistics (numpy and scipy only, also used by scripts/benchmark.py);
runs.py reads run folders; references.py the published scores shipped in references/;
analysis.py groups runs and computes the results; plots.py and command.py draw and write them.
"""
