/* The process's resident set, for the tools that report memory per held
 * lock (dlock bench's hold phase, bench/lease-cost). */
#ifndef DLOCK_TOOLS_RSS_H
#define DLOCK_TOOLS_RSS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* VmRSS in kB, or -1 when /proc does not say. */
static inline long rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0)
      kb = strtol(line + 6, NULL, 10);
  if (f)
    fclose(f);
  return kb;
}

#endif
