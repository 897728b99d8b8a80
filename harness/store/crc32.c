/* crc32.c — CRC-32, polynomial 0xEDB88320 reflected, one byte per table
 * step (crc32.h). */
#include "harness/store/crc32.h"

void ab_crc32_init(ab_crc32_table *ct)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        ct->t[i] = c;
    }
}

uint32_t ab_crc32(const ab_crc32_table *ct, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) c = ct->t[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}
