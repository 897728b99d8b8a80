/* crc32.h — CRC-32 (IEEE 802.3, reflected, as zlib and PNG), table driven:
 * the checksum of the store's journal records. */
#ifndef AB_STORE_CRC32_H
#define AB_STORE_CRC32_H

#include <stddef.h>
#include <stdint.h>

typedef struct ab_crc32_table {
    uint32_t t[256];
} ab_crc32_table;

void ab_crc32_init(ab_crc32_table *ct);
uint32_t ab_crc32(const ab_crc32_table *ct, const void *buf, size_t len);
#endif
