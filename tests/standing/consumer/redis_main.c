/* A program that uses the cpattern-redis module through its installed
 * interface (no server needed: it parses and formats a stream entry ID). */
#include <cpattern.h>
#include <cpattern/redis.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
	struct cpat_redis_id id;
	char buf[CPAT_REDIS_ID_MAX];
	if (cpat_redis_id_parse("1700000000000-7", 15, &id) != 0)
		return 1;
	if (cpat_redis_id_format(&id, buf, sizeof buf) != 15 ||
	    strcmp(buf, "1700000000000-7") != 0)
		return 1;
	printf("redis consumer ok: %s\n", buf);
	return 0;
}
