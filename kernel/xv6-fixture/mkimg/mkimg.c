// Host tool: write fs.img for the fixture kernel. No file system: every block carries a
// header naming it ("fixtblk", block number, generation 0) and bytes derived from its number,
// so the kernel can tell a wrong block from a right one (testlib.c's blk_check).
//
// usage: mkimg FILE NBLOCKS

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BSIZE 1024

int main(int argc, char **argv)
{
  if (argc != 3) {
    fprintf(stderr, "usage: mkimg FILE NBLOCKS\n");
    return 2;
  }
  long n = strtol(argv[2], 0, 10);
  if (n <= 0 || n > 1000000) {
    fprintf(stderr, "mkimg: NBLOCKS must be 1..1000000, not %s\n", argv[2]);
    return 2;
  }
  FILE *f = fopen(argv[1], "wb");
  if (f == 0) {
    perror(argv[1]);
    return 1;
  }
  unsigned char block[BSIZE];
  for (uint32_t b = 0; b < (uint32_t)n; b++) {
    uint32_t gen = 0;
    memcpy(block, "fixtblk", 8);
    memcpy(block + 8, &b, 4);   // little-endian host and guest
    memcpy(block + 12, &gen, 4);
    for (int i = 16; i < BSIZE; i++)
      block[i] = (b * 7 + gen * 13 + i) & 0xff;
    if (fwrite(block, BSIZE, 1, f) != 1) {
      perror(argv[1]);
      return 1;
    }
  }
  if (fclose(f) != 0) {
    perror(argv[1]);
    return 1;
  }
  return 0;
}
