/* Read bandwidth of a two-thread sum over 512 MiB of anonymous memory advised for
 * transparent huge pages (argument 1) or kept in 4 KiB pages (argument 0): the
 * measurement behind ARCHITECTURE.md "No huge pages for weights".
 *
 *   gcc -O3 -march=native -pthread tools/hugepage_sum.c -o /tmp/hugepage_sum
 *   for i in 1 2 3; do /tmp/hugepage_sum 0; /tmp/hugepage_sum 1; done
 *
 * Prints the best and mean bandwidth of 20 passes (bytes read per second).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define BYTES (512ul << 20)
#define THREADS 2
#define LANES 64

static float *buf;
static float part[THREADS];

static void *sum(void *arg) {
    long t = (long)arg;
    size_t n = BYTES / sizeof(float) / THREADS;
    const float *p = buf + t * n;
    float acc[LANES] = {0};
    for (size_t i = 0; i < n; i += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += p[i + l];
    float s = 0;
    for (int l = 0; l < LANES; l++) s += acc[l];
    part[t] = s;
    return NULL;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int huge = argc > 1 && atoi(argv[1]);
    buf = mmap(NULL, BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) return 1;
    madvise(buf, BYTES, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    for (size_t i = 0; i < BYTES / sizeof(float); i++) buf[i] = 1.0f;
    double best = 1e30, total = 0;
    for (int r = 0; r < 20; r++) {
        pthread_t th[THREADS];
        double t0 = now();
        for (long t = 0; t < THREADS; t++) pthread_create(&th[t], NULL, sum, (void *)t);
        for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
        double dt = now() - t0;
        total += dt;
        if (dt < best) best = dt;
    }
    printf("huge pages %s: best %.1f GB/s, mean %.1f GB/s (sum %.0f)\n", huge ? "on " : "off",
           BYTES / best / 1e9, BYTES / (total / 20) / 1e9, (double)part[0] + part[1]);
    return 0;
}
