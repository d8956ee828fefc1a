// A tiny shell on the console: "$ " prompt, one command per line, run in the shell's thread.

#include "types.h"
#include "param.h"
#include "riscv.h"
#include "spinlock.h"
#include "proc.h"
#include "defs.h"

#define MAXARGS 4

static void cmd_help(int argc, char **argv);

static void cmd_echo(int argc, char **argv)
{
  for (int i = 1; i < argc; i++)
    printf("%s%s", argv[i], i + 1 < argc ? " " : "");
  printf("\n");
}

static void cmd_ps(int argc, char **argv)
{
  procdump();
}

static void cmd_uptime(int argc, char **argv)
{
  printf("%d ticks, %d harts\n", ticks, nharts);
}

static void cmd_stats(int argc, char **argv)
{
  ntas(1);
}

static void cmd_free(int argc, char **argv)
{
  for (int i = 0; i < nharts; i++)
    printf("hart %d: %d free pages\n", i, kfreecount(i));
  printf("total: %d free pages\n", kfreecount(-1));
}

// Look for what the bug switches break: lock names, free lists, the buffer cache.
static void cmd_audit(int argc, char **argv)
{
  int bad = lockaudit() + kaudit() + baudit();
  if (bad == 0)
    printf("audit: OK\n");
  else
    printf("audit: %d problems\n", bad);
}

static void cmd_kalloctest(int argc, char **argv) { kalloctest(); }
static void cmd_bcachetest(int argc, char **argv) { bcachetest(); }
static void cmd_rwlktest(int argc, char **argv) { rwlktest(); }

static struct {
  char *name;
  void (*fn)(int, char **);
  char *help;
} cmds[] = {
  { "help", cmd_help, "list the commands" },
  { "echo", cmd_echo, "print the arguments" },
  { "ps", cmd_ps, "list the threads" },
  { "uptime", cmd_uptime, "ticks since boot" },
  { "free", cmd_free, "free pages per hart" },
  { "stats", cmd_stats, "the lab's lock statistics" },
  { "audit", cmd_audit, "check lock names, free lists and the buffer cache" },
  { "kalloctest", cmd_kalloctest, "the allocator test (test1, test2)" },
  { "bcachetest", cmd_bcachetest, "the buffer cache test (test0, test1)" },
  { "rwlktest", cmd_rwlktest, "the reader-writer lock test" },
};

static void cmd_help(int argc, char **argv)
{
  for (int i = 0; i < NELEM(cmds); i++)
    printf("%s: %s\n", cmds[i].name, cmds[i].help);
}

// Split line in place at spaces.
static int parse(char *line, char **argv)
{
  int argc = 0;
  char *s = line;
  while (*s && argc < MAXARGS) {
    while (*s == ' ' || *s == '\t')
      *s++ = 0;
    if (*s == 0)
      break;
    argv[argc++] = s;
    while (*s && *s != ' ' && *s != '\t')
      s++;
  }
  argv[argc] = 0;
  return argc;
}

static void shell(uint64 arg)
{
  char line[80];
  char *argv[MAXARGS + 1];

  // Let the other harts print their "starting" lines before the first prompt.
  acquire(&tickslock);
  while (ticks < 5)
    sleep(&ticks, &tickslock);
  release(&tickslock);

  for (;;) {
    printf("$ ");
    consgets(line, sizeof(line));
    int argc = parse(line, argv);
    if (argc == 0)
      continue;
    int i;
    for (i = 0; i < NELEM(cmds); i++) {
      if (strcmp(argv[0], cmds[i].name) == 0) {
        cmds[i].fn(argc, argv);
        break;
      }
    }
    if (i == NELEM(cmds))
      printf("sh: unknown command %s; try help\n", argv[0]);
  }
}

void shellinit(void)
{
  if (kthread("sh", shell, 0) < 0)
    panic("shellinit");
}
