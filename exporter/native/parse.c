/* Pure parsers of /proc text: a byte buffer in, numbers and offsets out.
 *
 * Every function takes (buf, n) and never reads outside [buf, buf+n); buffers are not
 * NUL-terminated and may contain NULs. The rules are those of exporter/procfs.py:
 * Python's bytes.split() whitespace, bytes.isdigit() numbers, the comm between the
 * first '(' and the LAST ')'.
 */
#define _GNU_SOURCE
#include <string.h>

#include "collector.h"

const char *const ps_status_keys[PS_ST_NKEYS] = {
    "Uid", "VmSwap", "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches",
};
const char *const ps_io_keys[PS_IO_NKEYS] = {"read_bytes", "write_bytes"};

/* The whitespace of bytes.split(): space, \t \n \v \f \r. */
static int parse_isspace(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Next whitespace-separated token of [*pos, end): 1 and its span, or 0 when none. */
static int parse_token(const char *buf, size_t end, size_t *pos, size_t *off, size_t *len)
{
    size_t i = *pos;

    while (i < end && parse_isspace((unsigned char)buf[i]))
        i++;
    if (i >= end) {
        *pos = end;
        return 0;
    }
    *off = i;
    while (i < end && !parse_isspace((unsigned char)buf[i]))
        i++;
    *len = i - *off;
    *pos = i;
    return 1;
}

/* An unsigned decimal of ASCII digits only (bytes.isdigit()); 0 or -1 (malformed).
 * Digits beyond 64 bits set out->big (the value wraps modulo 2^64). */
int parse_uint(const char *buf, size_t off, size_t len, ps_num *out)
{
    uint64_t v = 0;
    int big = 0;
    size_t i;

    if (len == 0)
        return -1;
    for (i = off; i < off + len; i++) {
        unsigned d = (unsigned char)buf[i] - '0';
        if (d > 9)
            return -1;
        if (__builtin_mul_overflow(v, 10, &v))
            big = 1;
        if (__builtin_add_overflow(v, d, &v))
            big = 1;
    }
    out->v = v;
    out->off = (uint32_t)off;
    out->len = (uint32_t)len;
    out->big = big;
    return 0;
}

/* /proc/PID/stat. Tokens are counted after the last ')': state (0) .. starttime (19) must
 * be there; vsize (20) and rss (21) may be missing. 0 or -1 (malformed). */
int parse_stat(const char *buf, size_t n, ps_stat *out)
{
    const char *left, *right;
    size_t off[22], len[22], pos;
    int ntok = 0;

    memset(out, 0, sizeof(*out));
    left = memchr(buf, '(', n);
    right = memrchr(buf, ')', n);
    if (left == NULL || right == NULL || right < left)
        return -1;
    pos = (size_t)(right - buf) + 1;
    while (ntok < 22 && parse_token(buf, n, &pos, &off[ntok], &len[ntok]))
        ntok++;
    if (ntok < 20)
        return -1;

    out->comm_off = (size_t)(left - buf) + 1;
    out->comm_len = (size_t)(right - left) - 1;
    out->state_off = off[0];
    out->state_len = len[0];
    if (parse_uint(buf, off[1], len[1], &out->ppid) < 0 ||
        parse_uint(buf, off[4], len[4], &out->tty_nr) < 0 ||
        parse_uint(buf, off[6], len[6], &out->flags) < 0 ||
        parse_uint(buf, off[7], len[7], &out->minflt) < 0 ||
        parse_uint(buf, off[9], len[9], &out->majflt) < 0 ||
        parse_uint(buf, off[11], len[11], &out->utime) < 0 ||
        parse_uint(buf, off[12], len[12], &out->stime) < 0 ||
        parse_uint(buf, off[17], len[17], &out->num_threads) < 0 ||
        parse_uint(buf, off[19], len[19], &out->starttime) < 0)
        return -1;
    if (ntok > 20) {
        if (parse_uint(buf, off[20], len[20], &out->vsize) < 0)
            return -1;
        out->has_vsize = 1;
    }
    if (ntok > 21) {
        if (parse_uint(buf, off[21], len[21], &out->rss) < 0)
            return -1;
        out->has_rss = 1;
    }
    return 0;
}

/* Lines "Key:<ws>value ..." (status, io). For each wanted key (the text before the first
 * colon, compared exactly) the first token after the colon must be a number; a later
 * line of the same key wins. Sets bit k of *found for keys[k]. 0 or -1 (malformed). */
int parse_keyed(const char *buf, size_t n, const char *const *keys, int nkeys, ps_num *out,
                unsigned *found)
{
    size_t pos = 0;

    *found = 0;
    while (pos < n) {
        const char *nl = memchr(buf + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - buf) : n;
        const char *colon = memchr(buf + pos, ':', end - pos);

        if (colon != NULL) {
            size_t klen = (size_t)(colon - (buf + pos));
            int k;
            for (k = 0; k < nkeys; k++) {
                if (strlen(keys[k]) == klen && memcmp(buf + pos, keys[k], klen) == 0) {
                    size_t tpos = (size_t)(colon - buf) + 1, toff, tlen;
                    if (!parse_token(buf, end, &tpos, &toff, &tlen))
                        return -1;
                    if (parse_uint(buf, toff, tlen, &out[k]) < 0)
                        return -1;
                    *found |= 1u << k;
                    break;
                }
            }
        }
        pos = end + 1;
    }
    return 0;
}

/* The soft limit of the first line starting "Max open files" of /proc/PID/limits.
 * 0 (value in *out, or *unlimited set) or -1 (malformed, or no such line). */
int parse_limits_nofile(const char *buf, size_t n, ps_num *out, int *unlimited)
{
    static const char prefix[] = "Max open files";
    const size_t plen = sizeof(prefix) - 1;
    size_t pos = 0;

    *unlimited = 0;
    while (pos < n) {
        const char *nl = memchr(buf + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - buf) : n;

        if (end - pos >= plen && memcmp(buf + pos, prefix, plen) == 0) {
            size_t tpos = pos + plen, toff, tlen;
            if (!parse_token(buf, end, &tpos, &toff, &tlen))
                return -1;
            if (tlen == 9 && memcmp(buf + toff, "unlimited", 9) == 0) {
                *unlimited = 1;
                return 0;
            }
            return parse_uint(buf, toff, tlen, out);
        }
        pos = end + 1;
    }
    return -1;
}

/* /proc/PID/cmdline: the number of arguments, and in *m the length to split (without
 * one trailing NUL). Empty data has no arguments; "\0" has one, "". */
size_t parse_cmdline_count(const char *buf, size_t n, size_t *m)
{
    size_t count = 1, i;

    if (n == 0) {
        *m = 0;
        return 0;
    }
    if (buf[n - 1] == '\0')
        n--;
    *m = n;
    for (i = 0; i < n; i++)
        count += buf[i] == '\0';
    return count;
}

/* The next NUL-separated argument of buf[0, m) starting at *pos (0 first): 1 and its
 * span, or 0 after the last one. */
int parse_cmdline_next(const char *buf, size_t m, size_t *pos, size_t *arg_off, size_t *arg_len)
{
    const char *z;
    size_t end;

    if (*pos > m)
        return 0;
    z = *pos < m ? memchr(buf + *pos, '\0', m - *pos) : NULL;
    end = z ? (size_t)(z - buf) : m;
    *arg_off = *pos;
    *arg_len = end - *pos;
    *pos = end + 1;
    return 1;
}
