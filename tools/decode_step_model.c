/* A model of GPT-2 small's f32 decode step on the CPU: the 49 matrix-vector products of
 * one token (12 layers of q/k/v 2304x768, attention out 768x768, MLP up 3072x768, MLP
 * down 768x3072, then the LM head 50257x768), two threads each taking half the rows of
 * every matrix, a barrier after each: what `archc bench specs/gpt2.arch --mode decode`
 * streams, without the rest of the step. It asks whether another access pattern reads
 * the weights faster on this machine (docs/PERF.md, issue 8's bandwidth goal):
 *
 *   gcc -O3 -march=native -pthread tools/decode_step_model.c -o /tmp/decode_step_model
 *   for r in 1 2 3; do
 *     /tmp/decode_step_model 0 131072    # archc's: 4 adjacent rows, prefetch 128 KiB ahead
 *     /tmp/decode_step_model 1 131072 1  # one row at a time
 *     /tmp/decode_step_model 1 131072 2  # 2 far-apart streams per thread
 *     /tmp/decode_step_model 1 131072 4  # 4 streams
 *     /tmp/decode_step_model 1 16384 4   # 4 streams, prefetch 16 KiB ahead
 *   done
 *
 * Arguments: variant (0 or 1), prefetch distance in bytes, streams (variant 1). Prints the
 * mean and best milliseconds per step over 30 steps (after 2 warm-up steps; the two
 * threads are started for each step, tens of microseconds). Needs
 * AVX-512 (F).
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define T 2
static int variant, S; static long PF;
static pthread_barrier_t bar;
typedef struct { long n, k; float *w; } Mat;
static Mat mats[64]; static int nm;
static float x[4096] __attribute__((aligned(64))); static float y[65536];
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static inline float dot(const float *w, long k){ __m512 a=_mm512_setzero_ps(),b=a; for(long i=0;i<k;i+=32){ _mm_prefetch((const char*)(w+i+PF/4),_MM_HINT_T2); _mm_prefetch((const char*)(w+i+16+PF/4),_MM_HINT_T2); a=_mm512_fmadd_ps(_mm512_loadu_ps(w+i),_mm512_load_ps(x+i),a); b=_mm512_fmadd_ps(_mm512_loadu_ps(w+i+16),_mm512_load_ps(x+i+16),b);} return _mm512_reduce_add_ps(_mm512_add_ps(a,b)); }
static void run_mat(Mat *m, int t){
  long lo=m->n*t/T, hi=m->n*(t+1)/T, k=m->k;
  if(variant==0){ for(long j=lo;j<hi;j+=4){ long e=j+4<hi?j+4:hi; 
      __m512 a[4]; for(int q=0;q<4;q++)a[q]=_mm512_setzero_ps();
      for(long i=0;i<k;i+=16){ __m512 xv=_mm512_load_ps(x+i); for(long q=0;q<e-j;q++){ const float*w=m->w+(j+q)*k+i; _mm_prefetch((const char*)(w+PF/4),_MM_HINT_T2); a[q]=_mm512_fmadd_ps(_mm512_loadu_ps(w),xv,a[q]);} }
      for(long q=0;q<e-j;q++) y[j+q]=_mm512_reduce_add_ps(a[q]); } }
  else { long len=(hi-lo+S-1)/S; 
    for(long r=0;r<len;r++){ for(int s=0;s<S;s++){ long j=lo+s*len+r; if(j>=hi||j>=lo+(s+1)*len) continue; y[j]=dot(m->w+j*k,k);} } }
}
static void *worker(void *arg){ long t=(long)arg; for(int i=0;i<nm;i++){ run_mat(&mats[i],t); pthread_barrier_wait(&bar);} return 0; }
static void add(long n,long k){ mats[nm].n=n; mats[nm].k=k; mats[nm].w=aligned_alloc(64,n*k*4); for(long i=0;i<n*k;i++) mats[nm].w[i]=(i%7)*0.001f; nm++; }
int main(int argc,char**argv){ variant=atoi(argv[1]); PF=atol(argv[2]); S=argc>3?atoi(argv[3]):1;
  for(int l=0;l<12;l++){ add(2304,768); add(768,768); add(3072,768); add(768,3072);} add(50257,768);
  for(int i=0;i<4096;i++) x[i]=1;
  pthread_barrier_init(&bar,0,T);
  double tot=0,best=1e9; int reps=30;
  for(int r=0;r<reps+2;r++){ pthread_t th[T]; double t0=now(); for(long t=0;t<T;t++) pthread_create(&th[t],0,worker,(void*)t); for(int t=0;t<T;t++) pthread_join(th[t],0); double dt=(now()-t0)*1e3; if(r>=2){tot+=dt; if(dt<best)best=dt;} }
  printf("(%g) v%d pf%ld S%d: mean %.2f ms best %.2f ms\n", y[5], variant, PF, S, tot/reps, best);
}
