/* sites: the correction-site rule (README: Correction layers) — after block i of L when (i+1) %
 * every == 0, and always after the last block — with no dependencies, so the report can apply it
 * too. */
#ifndef QCORR_SITES_H
#define QCORR_SITES_H

/* 1 when a correction follows block `block` (0-based) of an n_layer-block model. */
int correction_is_site(int block, int n_layer, int every);
/* How many sites: ceil(L / every) in effect, counted by the rule itself. */
int correction_site_count(int n_layer, int every);
/* The block of the first site: min(every, L) - 1. */
int correction_first_site(int n_layer, int every);

#endif
