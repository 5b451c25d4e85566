/* sites: see sites.h. Kept apart from correct.c so that code which only reads results (the
 * report) can place sites without linking against the model. */
#include "tables/sites.h"

int correction_is_site(int block, int n_layer, int every) { return (block + 1) % every == 0 || block == n_layer - 1; }

int correction_site_count(int n_layer, int every) {
    int n = 0;
    for (int i = 0; i < n_layer; i++) n += correction_is_site(i, n_layer, every);
    return n;
}

int correction_first_site(int n_layer, int every) { return (every < n_layer ? every : n_layer) - 1; }
