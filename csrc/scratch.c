/* Working memory kept between kernel calls.
 *
 * A call needs working memory: each thread's tile buffers, the packed weights, a row of zeros,
 * the weight gradient's partial sums.  Allocated afresh on every call, blocks of this size come
 * from mmap and every page faults on first touch; on a virtual machine that was a third of a
 * small layer's backward pass.  So each thread keeps one block per slot, grown as needed and
 * freed when the thread exits.  Blocks over CYC_SCRATCH_KEEP bytes are not kept (the work that
 * needs them dwarfs the faults, and a process should not hold on to them): a thread holds at
 * most CYC_SCRATCH_SLOTS of that size.
 */
#include <stdlib.h>
#include <string.h>

#include "cyconv.h"

#define CYC_SCRATCH_KEEP ((size_t)16 << 20)

#if defined(_WIN32)

void *cyc_scratch(int slot, size_t bytes)
{
    (void)slot;
    return calloc(1, bytes ? bytes : 1);
}

void cyc_scratch_done(int slot, void *block)
{
    (void)slot;
    free(block);
}

#else
#include <pthread.h>

typedef struct {
    void *block[CYC_SCRATCH_SLOTS];
    size_t bytes[CYC_SCRATCH_SLOTS];
} held_t;

static pthread_key_t held_key;
static pthread_once_t held_once = PTHREAD_ONCE_INIT;
static int held_ok;

static void held_release(void *p)
{
    held_t *h = (held_t *)p;
    for (int s = 0; s < CYC_SCRATCH_SLOTS; s++) free(h->block[s]);
    free(h);
}

static void held_init(void) { held_ok = pthread_key_create(&held_key, held_release) == 0; }

/* Zero-filled, on a cache line (the kernels' vectors are a line wide). */
static void *zeroed_block(size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    memset(p, 0, bytes);
    return p;
}

static held_t *held(void)
{
    pthread_once(&held_once, held_init);
    if (!held_ok) return NULL;
    held_t *h = (held_t *)pthread_getspecific(held_key);
    if (!h) {
        h = (held_t *)calloc(1, sizeof(held_t));
        if (h && pthread_setspecific(held_key, h) != 0) {
            free(h);
            h = NULL;
        }
    }
    return h;
}

void *cyc_scratch(int slot, size_t bytes)
{
    if (bytes == 0) bytes = 1;
    held_t *h = slot >= 0 && slot < CYC_SCRATCH_SLOTS && bytes <= CYC_SCRATCH_KEEP ? held() : NULL;
    if (!h) return calloc(1, bytes);
    if (bytes > h->bytes[slot]) {
        free(h->block[slot]);
        /* zero-filled: the zeros slot must read as zeros, and nothing ever writes to it */
        h->block[slot] = zeroed_block(bytes);
        h->bytes[slot] = h->block[slot] ? bytes : 0;
    }
    return h->block[slot];
}

void cyc_scratch_done(int slot, void *block)
{
    pthread_once(&held_once, held_init);
    held_t *h = slot >= 0 && slot < CYC_SCRATCH_SLOTS && held_ok
                    ? (held_t *)pthread_getspecific(held_key)
                    : NULL;
    if (!h || block != h->block[slot]) free(block);
}
#endif
