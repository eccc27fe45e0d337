"""The words people read: reasons and recommended actions rendered in French or English, apart from the logic."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from terrain.contracts import RecommendedAction
from terrain.contracts.base import one_line

LANGUAGES = ("fr", "en")
# Times are shown in the community manager's zone for French, in UTC otherwise.
_ZONES = {"fr": ZoneInfo("Europe/Paris"), "en": UTC}

_ACTIONS: Mapping[str, Mapping[str, str]] = {
    "reply_public": {
        "fr": "Répondre publiquement au commentaire {external_id}, sans le supprimer",
        "en": "Reply publicly to comment {external_id}; do not delete it",
    },
    "message_private": {
        "fr": "Écrire en privé à l'auteur du commentaire {external_id} avant le {deadline} "
        "(une seule réponse privée par commentaire, dans les {window_days} jours)",
        "en": "Send the author of comment {external_id} one private message before {deadline} "
        "(one private reply per comment, within {window_days} days)",
    },
    "hide": {
        "fr": "Masquer le commentaire {external_id} : il enfreint la charte ({flags}) ; dire publiquement pourquoi",
        "en": "Hide comment {external_id}: it breaks the charter ({flags}); say publicly why it was hidden",
    },
    "answer_thread": {
        "fr": "Répondre dans la discussion {thread_id} : masquer un commentaire ne clôt pas la conversation",
        "en": "Answer thread {thread_id} publicly: hiding a comment does not close the conversation",
    },
    "page": {
        "fr": "Alerter {recipients} (étape {step}) ; accusé de réception attendu avant le {deadline}",
        "en": "Page {recipients} (step {step}); acknowledge before {deadline}",
    },
    "field_visit": {
        "fr": "Envoyer quelqu'un sur le terrain{at_place} : rencontrer les personnes concernées et apaiser",
        "en": "Send someone into the field{at_place}: meet the people concerned and defuse it in person",
    },
}

_REASONS: Mapping[str, Mapping[str, str]] = {
    "respond": {
        "fr": "Le commentaire négatif {external_id} (score {score}) mérite une réponse",
        "en": "Negative comment {external_id} (score {score}) deserves an answer",
    },
    "moderate": {
        "fr": "Le commentaire {external_id} enfreint la charte ({flags}) : le masquer et dire pourquoi ; "
        "la discussion reçoit quand même une réponse",
        "en": "Comment {external_id} breaks the charter ({flags}): hide it and say why; "
        "the thread still gets an answer",
    },
    "cascade": {
        "fr": "{negatives} commentaires négatifs sur {comments} dans la discussion {thread_id} en moins de "
        "{window}{usually}",
        "en": "{negatives} negative of {comments} comments in thread {thread_id} within {window}{usually}",
    },
    "spike_volume": {
        "fr": "Pic de commentaires négatifs dans la communauté : {negatives} en {bucket} contre {usual} "
        "d'habitude (z = {z})",
        "en": "Community-wide spike of negative comments: {negatives} in {bucket} against a usual {usual} "
        "(z = {z})",
    },
    "spike_mean": {
        "fr": "Chute du sentiment moyen de la communauté : {mean} sur {comments} commentaires en {bucket} "
        "contre {usual} d'habitude (z = {z})",
        "en": "Community-wide fall of mean sentiment: {mean} over {comments} comments in {bucket} "
        "against a usual {usual} (z = {z})",
    },
    "ack_timeout": {
        "fr": "Pas d'accusé de réception avant le {deadline} : étape suivante",
        "en": "Not acknowledged by {deadline}: next step",
    },
    "repeat": {
        "fr": "Toujours pas d'accusé de réception : nouvelle alerte",
        "en": "Still not acknowledged: paging again",
    },
    "persisted": {
        "fr": "La crise dure depuis {age} sans être résolue : une visite sur le terrain est demandée",
        "en": "The crisis has lasted {age} without being resolved: a field visit is requested",
    },
    "grew_after_ack": {
        "fr": "{count} nouveaux commentaires négatifs depuis l'accusé de réception : une visite sur le terrain "
        "est demandée",
        "en": "{count} new negative comments since it was acknowledged: a field visit is requested",
    },
    "place": {
        "fr": "La crise concerne un lieu ({place}) : une visite sur le terrain est demandée",
        "en": "The crisis concerns a place ({place}): a field visit is requested",
    },
    "policy_end": {
        "fr": "Personne n'a accusé réception à aucune étape : une visite sur le terrain est demandée",
        "en": "Nobody acknowledged at any step: a field visit is requested",
    },
}


def language(lang: str | None) -> str:
    return lang if lang in LANGUAGES else "en"


def when(at: datetime, lang: str) -> str:
    """A time people read, with its zone named (CET or CEST for Paris: a deadline read in another zone, or across
    a change of daylight saving time, is otherwise an hour off)."""
    local = at.astimezone(_ZONES[language(lang)])
    return local.strftime("%d/%m/%Y %H:%M %Z") if lang == "fr" else local.strftime("%Y-%m-%d %H:%M UTC")


def duration(seconds: float, lang: str) -> str:
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = round(minutes / 60)
    if hours < 48:
        return f"{hours} h"
    days = round(hours / 24)
    return f"{days} {'jours' if lang == 'fr' else 'days'}"


class _Params(dict[str, str]):
    """Template values; a parameter an older or newer producer did not give renders as "?"."""

    def __missing__(self, key: str) -> str:
        return "?"


def _fill(template: str, params: Mapping[str, str], lang: str) -> str:
    values = _Params(params)
    if "baseline_share" in params:
        share = params["baseline_share"]
        if not share:
            values["usually"] = ""
        elif lang == "fr":
            values["usually"] = f" (d'habitude {share} de négatifs dans cette communauté)"
        else:
            values["usually"] = f" (this community usually runs at {share} negative)"
    if values.get("at_place") is None:
        place = params.get("place")
        values["at_place"] = (f" ({place})" if place else "")
    return template.format_map(values)


def action(a: RecommendedAction, lang: str | None) -> str:
    """One recommended action in the community's language; an unknown code renders as itself."""
    lang = language(lang)
    templates = _ACTIONS.get(a.code)
    if templates is None:
        return a.code
    params = dict(a.params)
    params.setdefault("external_id", a.external_id or "?")
    if a.deadline is not None:
        params["deadline"] = when(a.deadline, lang)
    return _fill(templates[lang], params, lang)


def reason(code: str, params: Mapping[str, str], lang: str | None) -> str:
    lang = language(lang)
    templates = _REASONS.get(code)
    return _fill(templates[lang], params, lang) if templates else code


# A comment's actions are the same objects in every version of its incident (the engine keeps them), and
# each version is rendered when it is stored and when it is published: each is rendered once here.
_RENDERED: dict[tuple[int, str | None], tuple[RecommendedAction, str]] = {}
_RENDERED_MAX = 20_000


def actions(items: list[RecommendedAction], lang: str | None) -> list[str]:
    out = []
    for a in items:
        key = (id(a), lang)
        hit = _RENDERED.get(key)
        if hit is None or hit[0] is not a:
            if len(_RENDERED) >= _RENDERED_MAX:
                _RENDERED.clear()
            hit = _RENDERED[key] = (a, action(a, lang))
        out.append(hit[1])
    return out


# Chat webhooks (Slack, Mattermost) read markup in the text, and an id or a place comes from outside: without
# this, a thread named `<!channel>` pages a whole channel and `<https://evil|click>` shows a link under a false
# name. Slack reads `<...>` as links, mentions and commands and asks for exactly &, < and > to be escaped as
# these entities, which both Slack and Mattermost show as the characters themselves. Mattermost also reads
# Markdown: `[text](url)` links and images, and `@channel`, `@here`, `@all` or `@name` mentions. An invisible
# word joiner (U+2060) after each `@` and between `]` and `(` keeps what people read and breaks both. A bare
# URL is still linked by both, under its own name. Lines start with Terrain's own words (an id holds no line
# break), so Markdown that needs a line start (headings, link definitions) cannot be opened from an id.
_CHAT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "@": "@\u2060"})


def for_chat(text: str) -> str:
    """`text` as a Slack or Mattermost message shows it, word for word, with no link or mention hidden in it."""
    return text.translate(_CHAT).replace("](", "]\u2060(")


def subject(text: str, limit: int = 250) -> str:
    """A one-line title of at most `limit` characters (an e-mail subject, a message's first line): line breaks
    and other hidden characters become spaces, whatever the parts it was built from hold."""
    return one_line(text)[:limit]
