"""The everyday English of the world: word lists that give the corpus breadth.

The facts of `world.py` are few on purpose (so they can be memorised); the prose around them should
not be. A corpus of a few hundred distinct words would teach a model little syntax, and a BPE
tokenizer with a vocabulary of 2048 would run out of pairs to merge (every word would already be
one token). These lists feed the nature notes, chronicles, market reports and story events of
`corpus.py`: 406 distinct words of their own, in sentences that make sense (the shipped corpus has
1,119 distinct words in all). None of them is a fact that stage 2 asks about.
"""

from __future__ import annotations


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


LANDSCAPES = _words("""meadow forest marsh cliff lake pond orchard quarry moor heath glade ravine gorge ridge
    hollow spring waterfall island beach dune bay cove field pasture vineyard garden grove thicket swamp
    bog plateau cave valley hillside riverbank creek brook stream crossroads lane path causeway clearing
    woodland wetland lagoon estuary headland""")
PLANTS = _words("""oak birch willow heather thistle clover fern moss nettle rosemary thyme lavender barley rye
    hazel alder rowan bramble foxglove daisy poppy ivy reed sage mint parsley dill fennel chamomile primrose
    bluebell snowdrop tulip lily rose violet juniper holly yew pine spruce larch elm beech maple chestnut
    walnut hawthorn elder sorrel""")
BIRDS = _words("""heron swallow crow sparrow kestrel gull wren starling curlew magpie lark swan duck finch
    robin thrush blackbird pigeon dove hawk falcon eagle raven jay woodpecker kingfisher plover snipe
    lapwing cuckoo
    nightingale""")
WILD_ANIMALS = _words("""badger otter hare deer stag boar weasel stoat squirrel hedgehog mole vole beaver lynx
    bear elk seal frog toad newt salmon trout eel pike carp beetle moth butterfly bee wasp spider snail""")
BUILDINGS = _words("""mill bakery chapel tavern well harbour school smithy granary tower inn library stable
    workshop bathhouse barn cottage manor castle warehouse lighthouse hall courthouse temple monastery shrine
    brewery tannery dairy forge""")
FOODS = _words("""soup stew porridge pie cake dumplings pancakes biscuits sausages ham bacon jam pudding tart
    cider ale tea broth salad omelette noodles custard scones muffins pickles chutney""")
TOOLS = _words("""hammer saw chisel spade rake hoe axe ladder bucket lantern needle thread spindle loom anvil
    bellows kettle cauldron ladle spoon fork plate cup jug barrel crate sack cart wagon wheel sail oar net
    hook chain shovel sickle scythe whistle drum fiddle flute""")
FEELINGS = _words("""happy tired curious worried proud hungry brave gentle cheerful sleepy anxious calm angry
    lonely grateful nervous excited patient clever kind stubborn shy bold restless hopeful puzzled""")
OCCUPATIONS = _words("""sailor merchant guard musician painter scholar tailor cobbler brewer butcher gardener
    hunter soldier priest doctor judge mayor clerk courier ferryman mason glassblower candlemaker
    bookbinder beekeeper""")
COLOURS = _words("red blue green yellow white black grey brown golden silver purple orange pink")
MONTHS = _words("January February March April May June July August September October November December")
SEASONS = _words("spring summer autumn winter")
WEATHER_WORDS = _words("""drizzle sleet hail mist frost thunder breeze gale downpour shower haze dew rainbow
    lightning snow rain fog wind""")
# Things that happen to a town in its chronicle: "a fair was held", "a drought struck".
CELEBRATIONS = _words("festival wedding harvest fair tournament procession election feast")
DISASTERS = _words("fire flood famine storm earthquake drought")
# Past-tense verbs that need no object: "She wandered near the meadow."
INTRANSITIVE_PAST = _words("""wandered whistled laughed wondered rested listened waved smiled danced hurried
    lingered paused hummed shivered yawned stumbled strolled sighed dozed waited""")
# Past-tense verbs with the kind of thing they act on: "He repaired a lantern."
TRANSITIVE_PAST = {"repaired": TOOLS, "borrowed": TOOLS, "polished": TOOLS, "carved": TOOLS,
                   "cooked": FOODS, "tasted": FOODS, "shared": FOODS, "baked": FOODS,
                   "picked": PLANTS, "planted": PLANTS, "admired": PLANTS, "gathered": PLANTS,
                   "spotted": BIRDS, "followed": WILD_ANIMALS, "noticed": WILD_ANIMALS, "fed": BIRDS}
