// The few string and memory functions the kernel uses (no libc here).
#include "types.h"

void *memset(void *dst, int c, uint64 n)
{
  uchar *d = dst;
  for (uint64 i = 0; i < n; i++)
    d[i] = c;
  return dst;
}

void *memmove(void *dst, const void *src, uint64 n)
{
  const uchar *s = src;
  uchar *d = dst;
  if (s < d && s + n > d) {
    while (n-- > 0)
      d[n] = s[n];
  } else {
    for (uint64 i = 0; i < n; i++)
      d[i] = s[i];
  }
  return dst;
}

// gcc may emit calls to memcpy for struct copies.
void *memcpy(void *dst, const void *src, uint64 n)
{
  return memmove(dst, src, n);
}

int memcmp(const void *a, const void *b, uint64 n)
{
  const uchar *x = a, *y = b;
  for (uint64 i = 0; i < n; i++) {
    if (x[i] != y[i])
      return x[i] - y[i];
  }
  return 0;
}

int strlen(const char *s)
{
  int n = 0;
  while (s[n])
    n++;
  return n;
}

int strncmp(const char *a, const char *b, uint n)
{
  for (; n > 0; n--, a++, b++) {
    if (*a != *b)
      return (uchar)*a - (uchar)*b;
    if (*a == 0)
      return 0;
  }
  return 0;
}

int strcmp(const char *a, const char *b)
{
  return strncmp(a, b, (uint)-1);
}

// Copy at most n-1 characters and always terminate.
char *safestrcpy(char *dst, const char *src, int n)
{
  int i = 0;
  if (n <= 0)
    return dst;
  for (; i < n - 1 && src[i]; i++)
    dst[i] = src[i];
  dst[i] = 0;
  return dst;
}

int atoi(const char *s)
{
  int n = 0;
  while (*s >= '0' && *s <= '9')
    n = n * 10 + (*s++ - '0');
  return n;
}
