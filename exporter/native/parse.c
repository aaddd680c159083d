/* Pure parsers of /proc text: a byte buffer in, numbers and offsets out.
 *
 * Every function takes (buf, n) and never reads outside [buf, buf+n); buffers are not
 * NUL-terminated and may contain NULs. The rules are those of exporter/procfs.py, the
 * twin: Python's bytes.split() whitespace, ASCII-digit numbers that fit in 64 bits (the
 * kernel prints u64: more digits are a malformed file), the comm between the first '('
 * and the LAST ')'.
 */
#define _GNU_SOURCE
#include <string.h>

#include "reader.h"

const char *const ps_status_keys[PS_ST_NKEYS] = {
    "Uid", "VmSwap", "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches",
};
const char *const ps_io_keys[PS_IO_NKEYS] = {"read_bytes", "write_bytes"};
const char *const ps_smaps_keys[PS_SM_NKEYS] = {"Pss", "SwapPss"};

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

/* An unsigned decimal of ASCII digits only that fits in 64 bits; 0 or -1 (malformed). */
int parse_uint(const char *buf, size_t off, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (len == 0)
        return -1;
    for (i = off; i < off + len; i++) {
        unsigned d = (unsigned char)buf[i] - '0';
        if (d > 9 || __builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, d, &v))
            return -1;
    }
    *out = v;
    return 0;
}

static uint64_t parse_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* Token i after the comm, as a number. */
#define STAT_UINT(i, dst) parse_uint(buf, off[i], len[i], dst)

/* /proc/PID/stat. Tokens are counted after the last ')': state (0) .. starttime (19) must
 * be there; vsize (20) and rss (21) may be missing. The exec evidence (mark) mixes the mm
 * addresses start_code (23), end_code (24), start_stack (25), arg_start (45), arg_end (46)
 * and env_end (48): an exec maps a new mm, and with address-space randomisation (or other
 * arguments) they change. The kernel shows them only to who may ptrace the process
 * (else arg_start is 0): then, and for kernel threads, zombies and short stat lines, the
 * mark is 0. 0 or -1 (malformed). */
int parse_stat(const char *buf, size_t n, ps_stat *out)
{
    const char *left, *right;
    size_t off[49], len[49], pos;
    uint64_t mm[6];
    int ntok = 0, i;

    memset(out, 0, sizeof(*out));
    left = memchr(buf, '(', n);
    right = memrchr(buf, ')', n);
    if (left == NULL || right == NULL || right < left)
        return -1;
    pos = (size_t)(right - buf) + 1;
    while (ntok < 49 && parse_token(buf, n, &pos, &off[ntok], &len[ntok]))
        ntok++;
    if (ntok < 20)
        return -1;

    out->comm_off = (size_t)(left - buf) + 1;
    out->comm_len = (size_t)(right - left) - 1;
    out->state_off = off[0];
    out->state_len = len[0];
    if (STAT_UINT(1, &out->ppid) < 0 || STAT_UINT(4, &out->tty_nr) < 0 ||
        STAT_UINT(6, &out->flags) < 0 || STAT_UINT(7, &out->minflt) < 0 ||
        STAT_UINT(9, &out->majflt) < 0 || STAT_UINT(11, &out->utime) < 0 ||
        STAT_UINT(12, &out->stime) < 0 || STAT_UINT(17, &out->num_threads) < 0 ||
        STAT_UINT(19, &out->starttime) < 0 || STAT_UINT(8, &out->cminflt) < 0 ||
        STAT_UINT(10, &out->cmajflt) < 0 || STAT_UINT(13, &out->cutime) < 0 ||
        STAT_UINT(14, &out->cstime) < 0)
        return -1;
    if (ntok > 20) {
        if (STAT_UINT(20, &out->vsize) < 0)
            return -1;
        out->has_vsize = 1;
    }
    if (ntok > 21) {
        if (STAT_UINT(21, &out->rss) < 0)
            return -1;
        out->has_rss = 1;
    }
    if (ntok == 49) {
        static const int at[6] = {45, 46, 48, 23, 24, 25};
        for (i = 0; i < 6; i++)
            if (STAT_UINT(at[i], &mm[i]) < 0)
                return -1;
        if (mm[0] != 0) {
            out->mark = mm[0] ^ parse_rotl(mm[1], 13) ^ parse_rotl(mm[2], 29) ^
                        parse_rotl(mm[3], 41) ^ parse_rotl(mm[4], 47) ^ parse_rotl(mm[5], 53);
            if (out->mark == 0)
                out->mark = 1;
        }
    }
    return 0;
}
#undef STAT_UINT

/* Lines "Key:<ws>value ..." (status, io). For each wanted key (the text before the first
 * colon, compared exactly) the first token after the colon must be a number; a later
 * line of the same key wins. Sets bit k of *found for keys[k]. 0 or -1 (malformed). */
int parse_keyed(const char *buf, size_t n, const char *const *keys, int nkeys, uint64_t *out,
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

/* The soft limit of the first line starting "Max open files" of /proc/PID/limits:
 * PS_UNLIMITED for "unlimited". 0 or -1 (malformed, or no such line). */
int parse_limits_nofile(const char *buf, size_t n, uint64_t *out)
{
    static const char prefix[] = "Max open files";
    const size_t plen = sizeof(prefix) - 1;
    size_t pos = 0;

    while (pos < n) {
        const char *nl = memchr(buf + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - buf) : n;

        if (end - pos >= plen && memcmp(buf + pos, prefix, plen) == 0) {
            size_t tpos = pos + plen, toff, tlen;
            if (!parse_token(buf, end, &tpos, &toff, &tlen))
                return -1;
            if (tlen == 9 && memcmp(buf + toff, "unlimited", 9) == 0) {
                *out = PS_UNLIMITED;
                return 0;
            }
            return parse_uint(buf, toff, tlen, out);
        }
        pos = end + 1;
    }
    return -1;
}

/* The effective uid: the second number of the first "Uid:" line of /proc/PID/status.
 * 0 or -1 (malformed, or no such line). */
int parse_effective_uid(const char *buf, size_t n, uint64_t *out)
{
    size_t pos = 0;

    while (pos < n) {
        const char *nl = memchr(buf + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - buf) : n;

        if (end - pos >= 4 && memcmp(buf + pos, "Uid:", 4) == 0) {
            size_t tpos = pos + 4, toff, tlen;
            if (!parse_token(buf, end, &tpos, &toff, &tlen) ||
                !parse_token(buf, end, &tpos, &toff, &tlen))
                return -1;
            return parse_uint(buf, toff, tlen, out);
        }
        pos = end + 1;
    }
    return -1;
}

/* /proc/PID/task/TID/schedstat: "run_ns wait_ns timeslices". 0 or -1 (malformed). */
int parse_schedstat(const char *buf, size_t n, uint64_t *run_ns, uint64_t *slices)
{
    size_t pos = 0, off[3], len[3];
    int i;

    for (i = 0; i < 3; i++)
        if (!parse_token(buf, n, &pos, &off[i], &len[i]))
            return -1;
    if (parse_uint(buf, off[0], len[0], run_ns) < 0 || parse_uint(buf, off[2], len[2], slices) < 0)
        return -1;
    return 0;
}
