#include "qos-rules.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct key_rule {
    const char *key;
    uint64_t min, max;
    const char *unit;
};

struct type_rule {
    const char *type;
    const char *keys;     /* space separated, for messages */
    const char *rate;     /* the key that must be present (rules[0]) */
    struct key_rule rules[4];
};

#define MAX_BYTES_PER_S 125000000000ULL /* 1 Tbit/s */
#define MAX_BURST 4294967295ULL

static const struct type_rule types[] = {
    {"egress-policer", "cir cbs", "cir",
     {{"cir", 0, MAX_BYTES_PER_S, "bytes/s"}, {"cbs", 0, MAX_BURST, "bytes"}}},
    {"trtcm-policer", "cir cbs eir ebs", "cir",
     {{"cir", 0, MAX_BYTES_PER_S, "bytes/s"},
      {"cbs", 0, MAX_BURST, "bytes"},
      {"eir", 0, MAX_BYTES_PER_S, "bytes/s"},
      {"ebs", 0, MAX_BURST, "bytes"}}},
    {"pkt-policer", "pir pbs", "pir",
     {{"pir", 0, 1000000000ULL, "packets/s"}, {"pbs", 0, MAX_BURST, "packets"}}},
};

static void
fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (errlen) {
        vsnprintf(err, errlen, fmt, ap);
    }
    va_end(ap);
}

static const struct type_rule *
find_type(const char *type)
{
    for (size_t i = 0; type && i < sizeof types / sizeof types[0]; i++) {
        if (!strcmp(types[i].type, type)) {
            return &types[i];
        }
    }
    return NULL;
}

static const struct key_rule *
find_key(const struct type_rule *t, const char *key)
{
    for (size_t i = 0; i < sizeof t->rules / sizeof t->rules[0] && t->rules[i].key; i++) {
        if (!strcmp(t->rules[i].key, key)) {
            return &t->rules[i];
        }
    }
    return NULL;
}

const char *
capsule_qos_keys(const char *type)
{
    const struct type_rule *t = find_type(type);
    return t ? t->keys : NULL;
}

const char *
capsule_qos_type_list(void)
{
    return "egress-policer, trtcm-policer, pkt-policer";
}

int
capsule_qos_parse(const char *type, const char *key, const char *text, uint64_t *value, char *err, size_t errlen)
{
    const struct type_rule *t = find_type(type);
    if (!t) {
        fail(err, errlen, "unknown QoS type \"%s\" (%s)", type ? type : "", capsule_qos_type_list());
        return -1;
    }
    const struct key_rule *r = find_key(t, key);
    if (!r) {
        fail(err, errlen, "%s has no key \"%s\" (its keys: %s)", type, key, t->keys);
        return -1;
    }
    /* Decimal digits only: strtoull would take "-5" (as 2^64 - 5), "+5",
     * " 5", "0x10" and "5k". */
    uint64_t v = 0;
    size_t len = strlen(text);
    int ok = len > 0 && len <= 20;
    for (size_t i = 0; ok && i < len; i++) {
        unsigned d = (unsigned) (text[i] - '0');
        if (d > 9 || v > (UINT64_MAX - d) / 10) {
            ok = 0;
        } else {
            v = v * 10 + d;
        }
    }
    if (!ok) {
        fail(err, errlen, "%s: %s=%s is not a non-negative integer (%s, %llu to %llu)", type,
             key, text, r->unit, (unsigned long long) r->min, (unsigned long long) r->max);
        return -1;
    }
    if (v < r->min || v > r->max) {
        fail(err, errlen, "%s: %s=%s is out of range (%s, %llu to %llu)", type, key, text, r->unit,
             (unsigned long long) r->min, (unsigned long long) r->max);
        return -1;
    }
    *value = v;
    return 0;
}

int
capsule_qos_check(const char *type, size_t n, const char *const *keys, const char *const *values, char *err,
                  size_t errlen)
{
    const struct type_rule *t = find_type(type);
    if (!t) {
        fail(err, errlen, "unknown QoS type \"%s\" (%s)", type ? type : "", capsule_qos_type_list());
        return -1;
    }
    int seen[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        uint64_t v;
        if (capsule_qos_parse(type, keys[i], values[i], &v, err, errlen)) {
            return -1;
        }
        seen[find_key(t, keys[i]) - t->rules] = 1;
    }
    /* rules[0] is the rate in every type. */
    if (!seen[0]) {
        fail(err, errlen, "%s needs %s (the committed rate)", type, t->rate);
        return -1;
    }
    return 0;
}
