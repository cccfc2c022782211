/* A program that uses libcpattern only through its installed interface. */
#include <cpattern.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
	struct cpat_chan *ch;
	struct cpat_token *tok;
	int v = 7, got = 0;
	if (cpat_chan_create(&ch, sizeof v, 4) != 0)
		return 1;
	if (cpat_token_create(&tok, NULL) != 0)
		return 1;
	if (cpat_chan_send(ch, &v, tok) != 0 ||
	    cpat_chan_recv(ch, &got, tok) != 0)
		return 1;
	cpat_token_cancel(tok);
	int rc = cpat_chan_recv(ch, &got, tok);
	cpat_token_unref(tok);
	cpat_chan_destroy(ch);
	if (got != 7 || rc != -ECANCELED)
		return 1;
	if (cpat_version_number() != CPAT_VERSION_NUMBER)
		return 1;
	printf("consumer ok: libcpattern %s\n", cpat_version());
	return 0;
}
