/*
 * report.h - `medfed report RUN_DIR [--out FILE.html]`: one self-contained
 * HTML file (inline SVG and CSS, no script, nothing fetched) from a run's
 * folder: a simulation's output folder or a coordinator's state directory.
 *
 * It reads RUN_DIR/metrics.jsonl (required), RUN_DIR/run.json (the
 * experiment record, common/runrec.h; older runs have none) and, where they
 * are (medfed-sim's folder), the sites' logs in RUN_DIR/logs/ for the number
 * of values each clipped. Above the charts: the record and the final figures.
 * Charts, one per round on the x axis: validation accuracy; loss (validation,
 * and training where the rows have it); validation AUC (two classes);
 * seconds (the slowest site's training and the rest); megabytes up and down;
 * the sites' participation (site x round: included, dropped, picked but not
 * aggregated, absent); the clip bound and the values clipped (secure rounds).
 * A chart without data is left out, and the report says which and why.
 *
 * Every chart is <figure class="chart" id="chart-NAME"> holding one <svg>
 * with a text.title, text.x-label and text.y-label, its marks
 * (polyline.line, circle.point, rect.bar, rect.cell) and, for several series,
 * a g.legend: tests/integration/report_check.py loads the file in headless
 * Chromium and checks each.
 */
#ifndef MEDFED_REPORT_H
#define MEDFED_REPORT_H

/* argv[0] is "report". Returns the process exit status (0 ok, 1 error, 2 usage). */
int report_main(int argc, char **argv);

#endif
