/* Harness of the README's channel snippet: an int `v` and a token `tok`. */
#include <cpattern.h>

int main(void)
{
	int v = 7;
	struct cpat_token *tok;
	if (cpat_token_create(&tok, NULL) != 0)
		return 1;
	/* @SNIPPET@ */
	cpat_token_unref(tok);
	return v == 7 ? 0 : 1;
}
