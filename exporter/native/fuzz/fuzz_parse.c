/* libFuzzer harness over the pure parsers of parse.c.
 *
 * The first byte of an input picks the parser, the rest is the file's text:
 *   0 parse_stat (/proc/PID/stat)        4 parse_limits_nofile (/proc/PID/limits)
 *   1 parse_keyed, status keys           5 parse_effective_uid (/proc/PID/status)
 *   2 parse_keyed, io keys               6 parse_uint over the whole text
 *   3 parse_keyed, smaps_rollup keys     7 all of them on the same text
 * (the byte modulo 8). The text is the end of libFuzzer's exact-size buffer: a read past
 * it is an ASan report. Beside memory safety the harness holds what callers rely on
 * (walk.c copies the comm and state spans out of the buffer): every span is inside the
 * text and where the parser says, found bits name only the keys asked for, and
 * parse_uint agrees with a plain 128-bit reference. A broken rule aborts (a crash).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../reader.h"

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond))                                                                       \
            abort();                                                                       \
    } while (0)

static volatile unsigned sink;

/* Every byte of [off, off+len) is inside the text: the span is read (ASan checks it). */
static void touch_span(const char *buf, size_t n, size_t off, size_t len)
{
    size_t i;
    unsigned sum = 0;

    CHECK(off <= n && len <= n - off);
    for (i = 0; i < len; i++)
        sum += (unsigned char)buf[off + i];
    sink = sum;
}

static void fuzz_stat(const char *buf, size_t n)
{
    ps_stat st;

    if (parse_stat(buf, n, &st) < 0)
        return;
    touch_span(buf, n, st.comm_off, st.comm_len);
    touch_span(buf, n, st.state_off, st.state_len);
    /* comm: between the first '(' and the last ')' */
    CHECK(st.comm_off >= 1 && buf[st.comm_off - 1] == '(');
    CHECK(st.comm_off + st.comm_len < n && buf[st.comm_off + st.comm_len] == ')');
    CHECK(memchr(buf, '(', st.comm_off - 1) == NULL);
    CHECK(memchr(buf + st.comm_off + st.comm_len + 1, ')', n - st.comm_off - st.comm_len - 1) == NULL);
    CHECK(st.state_len > 0 && st.state_off > st.comm_off + st.comm_len);
    CHECK(!st.has_rss || st.has_vsize);
}

static void fuzz_keyed(const char *buf, size_t n, const char *const *keys, int nkeys)
{
    uint64_t out[8];
    unsigned found = 0;

    if (parse_keyed(buf, n, keys, nkeys, out, &found) == 0)
        CHECK((found & ~((1u << nkeys) - 1)) == 0);
}

/* parse_uint against the obvious: ASCII digits only, at least one, at most 2**64-1. */
static void fuzz_uint(const char *buf, size_t n)
{
    unsigned __int128 ref = 0;
    uint64_t v = 12345;
    int ok = n > 0, rc;
    size_t i;

    for (i = 0; i < n && ok; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c < '0' || c > '9')
            ok = 0;
        else if ((ref = ref * 10 + (c - '0')) > UINT64_MAX)
            ok = 0;
    }
    rc = parse_uint(buf, 0, n, &v);
    CHECK(rc == (ok ? 0 : -1));
    CHECK(!ok || v == (uint64_t)ref);
    if (n > 2) /* a span inside the text */
        (void)parse_uint(buf, 1, n - 2, &v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf;
    size_t n;
    uint64_t x;
    unsigned pick;

    if (size == 0)
        return 0;
    pick = data[0] % 8;
    buf = (const char *)data + 1;
    n = size - 1;
    if (pick == 0 || pick == 7)
        fuzz_stat(buf, n);
    if (pick == 1 || pick == 7)
        fuzz_keyed(buf, n, ps_status_keys, PS_ST_NKEYS);
    if (pick == 2 || pick == 7)
        fuzz_keyed(buf, n, ps_io_keys, PS_IO_NKEYS);
    if (pick == 3 || pick == 7)
        fuzz_keyed(buf, n, ps_smaps_keys, PS_SM_NKEYS);
    if (pick == 4 || pick == 7)
        (void)parse_limits_nofile(buf, n, &x);
    if (pick == 5 || pick == 7)
        (void)parse_effective_uid(buf, n, &x);
    if (pick == 6 || pick == 7)
        fuzz_uint(buf, n);
    return 0;
}
