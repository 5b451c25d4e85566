/* report/csv: the small RFC 4180 reader of report.h (header row, quoted fields, \n or \r\n),
 * whose errors name the file, the line and the column. */
#include "report/report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

/* "3" or, once the header is known, "3 (seed)" */
static const char *column_label(char *buf, size_t size, char *const *fields, int n_cols, int field_no) {
    if (n_cols > 0 && field_no <= n_cols) snprintf(buf, size, "%d (%.100s)", field_no, fields[field_no - 1]);
    else snprintf(buf, size, "%d", field_no);
    return buf;
}

int report_csv_parse(const char *name, const char *text, size_t len, ReportCsv *csv) {
    memset(csv, 0, sizeof *csv);
    /* unquoting never lengthens a field and every field but the last consumes a separator, so
     * the text's length plus one terminator bounds the arena */
    char *arena = qc_malloc(len + 2, "CSV fields");
    if (!arena) return -1;
    char *out = arena;
    char **fields = NULL;
    int *lines = NULL;
    size_t n_fields = 0, cap_fields = 0, n_lines = 0, cap_lines = 0;
    size_t pos = 0;
    int line = 1, n_cols = -1;
    while (pos < len) {
        int record_line = line;
        size_t record_start = n_fields;
        int field_no = 0;
        for (;;) {
            field_no++;
            char *field = out;
            if (pos < len && text[pos] == '"') {
                int quote_line = line;
                pos++;
                for (;;) {
                    if (pos >= len) {
                        char label[128];
                        qc_error("%s line %d, column %s: quoted field is never closed", name, quote_line,
                                 column_label(label, sizeof label, fields, n_cols, field_no));
                        goto fail;
                    }
                    char c = text[pos];
                    if (c == '"') {
                        if (pos + 1 < len && text[pos + 1] == '"') {
                            *out++ = '"';
                            pos += 2;
                            continue;
                        }
                        pos++;
                        break;
                    }
                    if (c == '\n') line++;
                    *out++ = c;
                    pos++;
                }
                if (pos < len && text[pos] != ',' && text[pos] != '\n' && text[pos] != '\r') {
                    char label[128];
                    qc_error("%s line %d, column %s: unexpected '%c' after a closing quote", name, line,
                             column_label(label, sizeof label, fields, n_cols, field_no), text[pos]);
                    goto fail;
                }
            } else {
                while (pos < len && text[pos] != ',' && text[pos] != '\n' && text[pos] != '\r') *out++ = text[pos++];
            }
            *out++ = 0;
            if (n_fields == cap_fields) {
                cap_fields = cap_fields ? 2 * cap_fields : 256;
                char **grown = realloc(fields, cap_fields * sizeof *fields);
                if (!grown) { qc_error("%s: out of memory reading fields", name); goto fail; }
                fields = grown;
            }
            fields[n_fields++] = field;
            if (pos < len && text[pos] == ',') {
                pos++;
                continue;
            }
            if (pos < len && text[pos] == '\r') pos++;
            if (pos < len && text[pos] == '\n') pos++;
            line++;
            break;
        }
        int count = (int)(n_fields - record_start);
        if (count == 1 && fields[record_start][0] == 0) { /* a blank line */
            n_fields = record_start;
            continue;
        }
        if (n_cols < 0) {
            n_cols = count;
            continue;
        }
        if (count != n_cols) {
            qc_error("%s line %d: %d fields, but the header has %d", name, record_line, count, n_cols);
            goto fail;
        }
        if (n_lines == cap_lines) {
            cap_lines = cap_lines ? 2 * cap_lines : 64;
            int *grown = realloc(lines, cap_lines * sizeof *lines);
            if (!grown) { qc_error("%s: out of memory reading rows", name); goto fail; }
            lines = grown;
        }
        lines[n_lines++] = record_line;
    }
    if (n_cols < 0) {
        qc_error("%s: empty file (no header row)", name);
        goto fail;
    }
    csv->n_cols = n_cols;
    csv->n_rows = (int)n_lines;
    csv->header = fields;
    csv->cells = fields + n_cols;
    csv->lines = lines;
    csv->arena = arena;
    return 0;
fail:
    free(fields);
    free(lines);
    free(arena);
    return -1;
}

int report_csv_read(const char *path, ReportCsv *csv) {
    size_t size;
    uint8_t *text = read_file(path, &size);
    if (!text) return -1;
    int rc = report_csv_parse(path, (const char *)text, size, csv);
    free(text);
    return rc;
}

void report_csv_free(ReportCsv *csv) {
    free(csv->header);
    free(csv->lines);
    free(csv->arena);
    memset(csv, 0, sizeof *csv);
}

int report_csv_column(const ReportCsv *csv, const char *name) {
    for (int c = 0; c < csv->n_cols; c++)
        if (strcmp(csv->header[c], name) == 0) return c;
    return -1;
}
