"""A corpus of subscriber CSVs in every encoding that can hold them, for judging detection.

Each language has first names, surnames, cities and organisations as they are written in that
language (written for this corpus, not copied from a data set). :func:`corpus` builds
realistic files from them: one-language lists of several sizes, international lists that mix
languages, and mostly-ASCII lists with one or two non-ASCII names. Every file is encoded in
each of cp1250, cp1252, latin-1, ISO-8859-2, ISO-8859-15, UTF-8 (with and without BOM) and
UTF-16 that can represent it. ``tests/test_csv_encoding.py`` imports every one of them and
``bench/encodings.py`` prints the figures per language and encoding.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bulletin.store.csvfile import CsvReader, ImportFileError

# (first names, surnames, cities, organisations) per language.
LANGUAGES: dict[str, tuple[str, str, str, str]] = {
    "ro": (
        "Ștefan Ioana Mihai Andreea Cătălin Răzvan Ionuț Bianca Tudor Ilinca Horațiu Sânziana "
        "Doina Viorica Costel Mădălina Gheorghe Dănuț Florin Alexandru Irina Radu Teodora Ana "
        "Maria Elena Vlad Oana Bogdan Raluca Lăcrămioara Tănase Ștefănel Cosmin Petrică Nicoleta",
        "Popescu Țurcanu Pătrașcu Stănescu Mureșan Bălan Vîlcu Lăzărescu Niță Țiriac Șerban "
        "Dumitrașcu Ionescu Munteanu Georgescu Ciobanu Preda Diaconu Nistor Crăciun Tănăsescu "
        "Voiculescu Brâncoveanu Rădulescu Stoica Manea Ursu Bucur Sârbu Iordache Păun Gâlcă "
        "Zăvoianu Oprișan Constantinescu Ardeleanu Bârlădeanu Chirilă Țăranu Șoimaru",
        "București|Iași|Cluj-Napoca|Timișoara|Brașov|Constanța|Pitești|Târgu Mureș|Galați|"
        "Craiova|Sibiu|Bacău|Suceava|Botoșani|Ploiești|Brăila|Focșani|Râmnicu Vâlcea|Alba Iulia|"
        "Drobeta-Turnu Severin|Bârlad|Târgu Jiu|Vaslui|Făgăraș",
        "Universitatea „Alexandru Ioan Cuza”|Asociația Culturală „Dunărea”|"
        "Primăria Municipiului Iași|Fundația Comunitară Sibiu|Școala Gimnazială nr. 5|"
        "Colegiul Național „Mihai Eminescu”|Camera de Comerț și Industrie|"
        "Biblioteca Județeană|Editura Polirom|Teatrul Național|Asociația Părinților|"
        "Direcția de Sănătate Publică|Clubul Sportiv Municipal",
    ),
    "fr": (
        "François Hélène Thérèse Jérôme Loïc Gaëlle Benoît Céline Noël Anaïs Maëlle Clément Léa "
        "Agnès Raphaël Cécile Zoé Élodie Stéphane Frédéric Sébastien Mélanie Joël Ghislaine "
        "Aurélie Pierre Marie Jean Margaux Hervé Inès Chloé Gérard Renée Amélie Josée Geneviève",
        "Lefèvre Dupré Bélanger Garçon Lemaître Mercier Chevalier Gauthier Rivière Brûlé "
        "Bouchard Lécuyer Delacroix Lévêque Ménard Fournier Benoît Béranger Crépin Désiré "
        "Hébert Thébault Côté Gérin Mallet Prévost Noël Lambert Leroy Faure Lefébure Pagé "
        "Bérubé Lévesque Daigle Tremblay Gagné Bégin Fréchette Paré",
        "Besançon|Orléans|Nîmes|Genève|Saint-Étienne|Montréal|Québec|Béziers|Angoulême|"
        "Valenciennes|Reims|Aix-en-Provence|Sète|Mâcon|Châlons-en-Champagne|Évry|Pontoise|"
        "L'Haÿ-les-Roses|Saint-Denis|Troyes|Compiègne|Périgueux|Trois-Rivières|Lévis",
        "Forêt et Patrimoine|Coût zéro|Société Générale|Crème de la crème SARL|"
        "Bibliothèque municipale|Théâtre du Châtelet|Mairie de Sète|Association Être et Agir|"
        "École élémentaire Jules Ferry|Café des Arts|Hôpital Saint-Louis|Cœur de Ville|"
        "Fédération française de randonnée|Maison de la Culture|Collège Sainte-Thérèse",
    ),
    "es": (
        "José María Iñaki Begoña Ángel Jesús Lucía Sofía Andrés Álvaro Inés Raúl Martín Mónica "
        "Verónica Joaquín Ramón Óscar Adrián Íñigo Nerea Ainhoa Concepción Pilar Dolores "
        "Consuelo Germán Rocío Nuria Asunción Belén Sebastián Fermín",
        "García Pérez Martínez Núñez Goñi Muñoz Ibáñez Peña Gómez Fernández Rodríguez Sánchez "
        "López Jiménez Castaño Ordóñez Cañete Avendaño Zúñiga Echevarría Urquijo Larrañaga Díaz "
        "Álvarez Vázquez Güemes Argüello Cortés Benítez Marañón Montaño Solís",
        "A Coruña|Logroño|Málaga|Cádiz|Córdoba|León|Ávila|Almería|Cáceres|Peñíscola|Donostia|"
        "Alcalá de Henares|Bilbao|Jaén|Gijón|Móstoles|San Sebastián|Cartagena|Ourense|"
        "Valdepeñas|Mérida|Zaragoza|Medellín|Bogotá",
        "Fundación Española|Asociación Cultural Peñaranda|Ayuntamiento de Logroño|"
        "Compañía Telefónica|Universidad de Cádiz|Biblioteca Pública|Cooperativa Agrícola|"
        "Colegio Público Niño Jesús|Editorial Anagrama|Cámara de Comercio|"
        "Sociedad Gastronómica|Federación de Montaña",
    ),
    "pt": (
        "João Simão Estêvão Gonçalo Conceição Inês Luís Sebastião Fátima Vânia Mónica Ângela "
        "Tomás Jéssica António Cecília Lúcia Márcio Rúben Glória Brás Graça Assunção Joana "
        "Leonor Amália Célia Gustavo Cláudia",
        "Gonçalves Magalhães Guimarães Simões Camões Araújo Conceição Brandão Falcão Leão "
        "Patrício Loureiro Sá Antunes Carvalho Gusmão Damião Mourão Assis Tavares Romão Calçada "
        "Lobão Gaspar Jordão Bragança Sampaio Peixoto Galvão",
        "São Paulo|Lisboa|Coimbra|Évora|Setúbal|Braga|Guimarães|Viseu|Portimão|Óbidos|Belém|"
        "Maceió|Florianópolis|Ribeirão Preto|Niterói|Vitória|Amadora|Almada|Fundão|"
        "Póvoa de Varzim|Goiânia|Maranhão|Paços de Ferreira|Santarém",
        "Associação Cultural|Fundação Calouste Gulbenkian|Câmara Municipal de Évora|"
        "Universidade de Coimbra|Instituto Camões|Biblioteca Nacional|"
        "Cooperativa Agrícola do Fundão|Escola Secundária|Companhia União Fabril|"
        "Centro de Formação|Sociedade Filarmónica|Associação dos Bombeiros Voluntários",
    ),
    "ca": (
        "Jordi Núria Mercè Josep Martí Pere Pau Laia Jaume Sílvia Roser Quim Arnau Joan Ramon "
        "Glòria Berta Gemma Lluís Àngels Èric Mireia Oriol Ferran Marçal Aina Queralt Cèlia "
        "Montserrat Agustí Francesc Ignasi Lluïsa",
        "Casals Puig Soler Ferrer Vilà Clotet Garcés Solà Bosch Riera Masó Roig Sàbat Bonet Miró "
        "Gual Subirats Ripoll Pujol Comas Font Tàpies Vidal Torrent Pagès Serrallonga Prat Vilaró "
        "Pellicer Ginestà Rovira Mas Camps Girbau Castellví",
        "Barcelona|Girona|Lleida|Tarragona|Vic|Manresa|Sabadell|Terrassa|Mataró|Figueres|Olot|"
        "Reus|Cerdanyola del Vallès|Sant Cugat del Vallès|L'Hospitalet de Llobregat|"
        "Andorra la Vella|Palma|València|Castelló|Vilanova i la Geltrú|Badalona|Igualada|"
        "Gràcia|Sant Adrià de Besòs",
        "Col·legi d'Advocats|Associació Cultural|Fundació Catalunya|Ajuntament de Vic|"
        "Universitat Pompeu Fabra|Biblioteca de Catalunya|Orfeó Català|"
        "Cooperativa Agrícola de Valls|Escola Pia|Cambra de Comerç|Institut d'Estudis Catalans|"
        "Federació d'Associacions de Veïns|Òmnium Cultural",
    ),
    "de": (
        "Jürgen Jörg Günther Ursula Käthe Bärbel Sören Uwe Heike Mareike Gerd Lukas Dörte Götz "
        "Hans-Jürgen Jörn Thorsten Annelie Helmut Sabine Franziska Maximilian Björn Anneliese "
        "Friedrich Klaus Brigitte Ute",
        "Müller Schröder Weiß Groß Krüger Schäfer Köhler Böhm Jäger Meißner Fuchs Wagner "
        "Hoffmann Günther Möller Vogt Schütz Kühn Bäcker Strauß Löwe Dürr Fröhlich Grün Süß "
        "Hölzl Brückner Nüßlein Größer Hübner Jünger Kötter",
        "München|Köln|Düsseldorf|Nürnberg|Würzburg|Lübeck|Göttingen|Saarbrücken|Osnabrück|"
        "Tübingen|Mülheim an der Ruhr|Gießen|Fürth|Zürich|Linz|Graz|Innsbruck|Bozen|Dresden|"
        "Leipzig|Lüneburg|Völklingen|Gütersloh|Wien",
        "Stadtbücherei|Förderverein e.V.|Bürgerstiftung|Grüne Straße GmbH|Universität Tübingen|"
        "Volkshochschule|Süddeutsche Zeitung|Gemeinnützige Gesellschaft|Sparkasse Würzburg|"
        "Städtisches Museum|Bündnis für Familie|Kulturbüro Köln|Schützenverein",
    ),
    "it": (
        "Niccolò Nicolò Mosè Giosuè Gabriele Chiara Giulia Lucia Andrea Matteo Francesca Paolo "
        "Martina Federico Lorenzo Giuseppe Alessandro Elisa Beatrice Tommaso Ilaria Caterina "
        "Davide Noè Nicolò",
        "Rossi Bianchi Esposito Russo Ferrari Romano Colombo Ricci Marino Greco Bruno Gallo "
        "Conti De Luca Mancini Costa Giordano Lombardi Moretti Barbieri Fontana Santoro "
        "Falcomatà Cantù Parisi Villa Sciascia Dell'Acqua D'Angelo Fabbri Pellegrini Caputo",
        "Forlì|Cantù|Paternò|Mondovì|Agrigento|Sulmona|Città di Castello|Ragusa|Vibo Valentia|"
        "Cefalù|Sant'Antioco|Brescia|Bergamo|Torino|Milano|Napoli|Bologna|Firenze|Genova|Lecce|"
        "Aosta|Bussolengo|Portovenere|Pescara",
        "Comune di Forlì|Università degli Studi|Associazione Città Aperta|Biblioteca civica|"
        "Società Dante Alighieri|Cooperativa Solidarietà|Caffè Letterario|Pro Loco di Cefalù|"
        "Fondazione Libertà|Croce Rossa Italiana|Circolo Arci|Teatro Comunale|"
        "Camera di Commercio",
    ),
    "nl": (
        "Joël Daniëlle Noëlle Loïs Chloë Zoë Ilse Bram Sanne Joris Thijs Maarten Femke Geert "
        "Ineke Sietske Anouk Ruud Wouter Eefje Ruben Rogier Reinoud Michiel Gaël Anaïs",
        "de Vries|van der Berg|Jansen|Bakker|Visser|Smit|Meijer|de Boer|Mulder|de Groot|Bos|Vos|"
        "Peters|Hendriks|van Dijk|Dekker|Brouwer|de Wit|Dijkstra|Smits|de Graaf|van der Meer|"
        "Kuijpers|Sluijter|Vermeulen|van 't Hof|Geërts|Janssens|Peeters|Maes",
        "'s-Hertogenbosch|Den Haag|Utrecht|Groningen|Zwolle|Leeuwarden|Eindhoven|Maastricht|"
        "Tilburg|Delft|Haarlem|Nijmegen|Almere|Enschede|Roermond|Gent|Brugge|Leuven|Liège|"
        "Zoersel|Kortrijk|Oostende",
        "Stichting Coöperatie Noord|Gemeente Zwolle|Vereniging Één Wereld|Bibliotheek Delft|"
        "Ruïne van Brederode|Café 't Hoekje|Coöperatieve Rabobank|België Vlaanderen vzw|"
        "Hogeschool Utrecht|Stichting Reünie|Financiën en Economie|Ideeënbus bv",
    ),
    "da": (
        "Søren Bjørn Jørgen Åse Kåre Sørine Mette Ingrid Kjersti Trond Håkon Torbjørn Astrid "
        "Sigrid Øystein Ståle Mads Signe Gøril Åsmund Frøya Lærke Nanna Bodil Jens Rasmus",
        "Sørensen Jørgensen Nielsen Kierkegaard Hansen Pedersen Brøndum Bækgaard Sæther Økland "
        "Løvås Bråten Haugen Strøm Dæhlie Fløgstad Holmsen Mørk Ødegaard Østergaard Grønvold "
        "Kjær Lund Bøe Næss Aas Kjærsgaard Thomsen Frølich Søndergaard Bjørnstad",
        "København|Århus|Aalborg|Odense|Esbjerg|Roskilde|Helsingør|Tromsø|Bodø|Ålesund|"
        "Kristiansand|Lillehammer|Stavanger|Trondheim|Bærum|Sandnes|Drøbak|Fredrikstad|"
        "Hønefoss|Næstved|Køge|Ærøskøbing|Løgstør|Sønderborg",
        "Høgskolen i Oslo|Roskilde Bibliotek|Forening for Fællesskab|Dansk Røde Kors|"
        "Norsk Folkehjelp|Sønderjysk Fond|Kunstforeningen Gl. Strand|Søsterforeningen|"
        "Grøn Omstilling A/S|Frivillighedscenter|Boligselskabet Ørestad|Lærerforeningen",
    ),
    "sv": (
        "Åsa Göran Björn Märta Jöns Kjell Åke Örjan Solveig Linnéa Agnes Sören Ingegärd Gunnel "
        "Mårten Måns Birgitta Lars Karin Ulf Ylva Hjördis Lisbeth Stig Gösta Maj-Britt",
        "Andersson Johansson Söderberg Åberg Öberg Ström Bäckström Hägglund Lindström Sjöberg "
        "Nyström Ekström Lindqvist Löfgren Wästberg Hedström Åkesson Ångström Fält Sundén "
        "Björklund Wikström Östlund Häggström Dahlén",
        "Göteborg|Malmö|Norrköping|Jönköping|Linköping|Örebro|Västerås|Umeå|Luleå|Gävle|Borås|"
        "Växjö|Södertälje|Skövde|Östersund|Härnösand|Trollhättan|Uppsala|Lund|Kiruna|"
        "Sundsvall|Karlskrona|Ängelholm",
        "Kommunförbundet|Högskolan i Borås|Föreningen Norden|Stadsbibliotek|Folkets Hus|"
        "Studieförbund|Länsstyrelsen|Naturskyddsföreningen|Svenska Kyrkan|Försäkringskassan|"
        "Hyresgästföreningen|Kulturföreningen Röda Sten",
    ),
    "fi": (
        "Jyrki Päivi Sisko Tytti Väinö Yrjö Sirkka Tuula Pirjo Hilkka Jukka Mikko Satu Anneli "
        "Kyösti Leena Riikka Tuomas Ilkka Sanna Tapani Hannele Eevi Mervi Pekka",
        "Hämäläinen Mäkinen Jääskeläinen Räikkönen Häkkinen Väisänen Kärkkäinen Lähteenmäki "
        "Pääkkönen Heikkilä Järvinen Mäkelä Kivelä Ylönen Söderholm Kärki Lindén Vähätalo "
        "Östman Sääskilahti Koskinen Virtanen Nieminen Mäenpää Ryynänen",
        "Helsinki|Tampere|Jyväskylä|Hämeenlinna|Seinäjoki|Mäntsälä|Järvenpää|Kerava|Oulu|Vaasa|"
        "Kuopio|Lappeenranta|Porvoo|Äänekoski|Pori|Kemi|Hyvinkää|Lohja|Kajaani|Rovaniemi|"
        "Jämsä|Pieksämäki",
        "Kirjasto|Yhdistys ry|Säätiö|Työväenopisto|Jyväskylän yliopisto|Kaupunginteatteri|"
        "Kansalaisopisto|Ympäristökeskus|Pääkaupunkiseudun Kierrätyskeskus|Nuorisoseura|"
        "Eläkeläiset ry|Metsänhoitoyhdistys",
    ),
    "is": (
        "Guðrún Þór Sigurður Þórunn Ólafur Björk Ásdís Jón Halldór Ragnheiður Eiður Þorsteinn "
        "Hrafnhildur Sigríður Bjarni Kristín Arnaldur Steinunn Gunnar Ævar Daði Ástríður "
        "Snæbjörn Eyþór Arnþór Sólveig Hildur",
        "Guðmundsdóttir Jónsson Sigurðsson Þórsdóttir Ólafsson Einarsdóttir Björnsson "
        "Magnúsdóttir Halldórsson Stefánsdóttir Ásgeirsson Gíslason Pálsdóttir Þorvaldsson "
        "Kristjánsdóttir Helgason Sveinsdóttir Árnason Hauksdóttir",
        "Reykjavík|Akureyri|Hafnarfjörður|Kópavogur|Garðabær|Ísafjörður|Egilsstaðir|Húsavík|"
        "Selfoss|Sauðárkrókur|Vestmannaeyjar|Borgarnes|Höfn|Þorlákshöfn|Mosfellsbær|"
        "Reykjanesbær|Siglufjörður",
        "Háskóli Íslands|Borgarbókasafn|Rauði krossinn|Þjóðleikhúsið|Ungmennafélag|"
        "Félag íslenskra bókaútgefenda|Listasafn Reykjavíkur|Kvenfélagið|Menntaskólinn á "
        "Akureyri|Björgunarsveitin|Norræna húsið",
    ),
    "et": (
        "Tõnu Jüri Mart Kristjan Liis Kadri Tõnis Küllike Ülle Mari-Liis Tiit Priit Kärt "
        "Anneli Õie Mall Rünno Ülo Maarja Ene Mihkel",
        "Tamm Saar Sepp Mägi Kask Kukk Rebane Ilves Pärn Koppel Põder Kõiv Lepik Sõber "
        "Tõnisson Jõgi Mölder Põld Ülesoo Šmigun Kõrgesaar Mänd Tüür Männik Laur",
        "Tallinn|Tartu|Narva|Pärnu|Kohtla-Järve|Viljandi|Rakvere|Maardu|Kuressaare|Sillamäe|"
        "Võru|Valga|Jõhvi|Haapsalu|Keila|Paide|Põlva|Türi|Jõgeva|Rapla|Saue|Elva|Tõrva|Kärdla",
        "Tartu Ülikool|Rahvaraamatukogu|Mittetulundusühing|Sihtasutus|Põhikool|Kultuurimaja|"
        "Eesti Kunstiakadeemia|Seltsimaja|Külaselts|Noorsootöö Keskus|Maanteeamet",
    ),
    "pl": (
        "Łukasz Małgorzata Grzegorz Wojciech Paweł Michał Agnieszka Krzysztof Zofia Jędrzej "
        "Bożena Elżbieta Stanisław Dorota Ewa Mirosław Jadwiga Przemysław Józef Kazimierz Anna "
        "Marek Wiesława Radosław Żaneta Zdzisław Ludwika Jarosław Mściwój Grażyna Jolanta",
        "Wiśniewski Dąbrowski Kościuszko Wałęsa Żak Ślusarczyk Nowak Kowalski Wójcik Kamiński "
        "Lewandowski Zieliński Szymański Woźniak Kozłowski Jankowski Mazur Krawczyk Piotrowski "
        "Grabowski Pawłowski Michalski Król Wieczorek Jabłoński Wróbel Dudek Stępień Górski "
        "Sikora Zając Mączyński Łęcki Świątek Żółtowski Gęsicki Kaźmierczak Bąk Sęk Ćwik "
        "Ziółkowski Kępa Kuźniar Maćkowiak Gnieźnieński Dziędziel",
        "Łódź|Kraków|Wrocław|Gdańsk|Poznań|Szczecin|Białystok|Częstochowa|Toruń|Rzeszów|"
        "Gliwice|Zabrze|Bielsko-Biała|Olsztyn|Opole|Kielce|Gorzów Wielkopolski|Zielona Góra|"
        "Świętochłowice|Tczew|Siedlce|Włocławek|Żyrardów|Śrem|Łańcut|Świnoujście|Gniezno|Płońsk",
        "Uniwersytet Jagielloński|Fundacja Kultury|Stowarzyszenie Przyjaciół|Urząd Miasta|"
        "Biblioteka Publiczna|Towarzystwo Przyjaciół Sztuk Pięknych|Spółdzielnia Mieszkaniowa|"
        "Szkoła Podstawowa nr 3|Muzeum Śląskie|Polskie Stowarzyszenie Żeglarskie|"
        "Ochotnicza Straż Pożarna|Dom Kultury Śródmieście",
    ),
    "cs": (
        "Jiří Petr Tomáš Lukáš Jan Jana Kateřina Věra Zdeněk Miroslav Radek Dušan Hana Lucie "
        "Jaroslav Ondřej Přemysl Božena Růžena Vojtěch Matěj Šárka Marie Jitka Zuzana Anežka "
        "Lubomír Dalibor Bohuslav Eliška Tereza Jindřich Čestmír Bořivoj Květa Dagmar",
        "Novák Svoboda Novotný Dvořák Černý Procházka Kučera Veselý Horák Němec Pokorný Marek "
        "Pospíšil Hájek Jelínek Růžička Beneš Fiala Sedláček Doležal Zeman Kolář Navrátil "
        "Čermák Vaněk Blažek Kříž Kovář Bartoš Vlček Kopecký Šimek Konečný Malý Holub "
        "Štěpánek Kadlec Dostál Šťastný Žižka Skála Hrubý Kratochvíl Ševčík Bureš Říha Kubíček "
        "Ježek Čech Šindelář Kořínek Krčmář Mlčoch Dřevíkovský Hřebejk Ťoupalík",
        "Praha|Brno|Ostrava|Plzeň|Liberec|Olomouc|České Budějovice|Hradec Králové|"
        "Ústí nad Labem|Pardubice|Zlín|Havířov|Kladno|Opava|Frýdek-Místek|Karviná|Jihlava|"
        "Teplice|Děčín|Karlovy Vary|Chomutov|Přerov|Mladá Boleslav|Prostějov|Třebíč|Třinec|"
        "Tábor|Znojmo|Příbram|Kolín|Písek|Kroměříž|Šumperk|Český Krumlov|Žďár nad Sázavou",
        "Univerzita Karlova|Městská knihovna|Spolek přátel Žďáru|Nadace Dagmar a Václava "
        "Havlových|Základní škola|Divadlo Na zábradlí|Národní muzeum|Sdružení obcí|"
        "Česká spořitelna|Vysoké učení technické|Sbor dobrovolných hasičů|Kulturní dům Lidice",
    ),
    "sk": (
        "Ľubica Ľubomír Ján Jozef Štefan Mária Zuzana Ľudmila Dušan Peter Tomáš Martin Ivana "
        "Katarína Miroslav Viera Ondrej Juraj Róbert Eva Ľuboš Blažena Jarmila Radoslav Ďuro "
        "Ľudovít Dávid Šimon Kristína",
        "Kováč Horváth Varga Tóth Baláž Szabó Molnár Balog Lukáč Kollár Hudák Oravec Kráľ "
        "Ďurica Šimko Mráz Kováčik Michalík Gašpar Kučera Hruška Ďuriš Šťastný Mikuláš Kmeť "
        "Bednár Čierny Pavlík Kubík Kozák Štefánik Hlinka Žiak Ľupták Dlhý Čaplovič Hrnčiar "
        "Mäsiar Päťko Vŕba Stĺpik",
        "Bratislava|Košice|Prešov|Žilina|Nitra|Banská Bystrica|Trnava|Martin|Trenčín|Poprad|"
        "Prievidza|Zvolen|Považská Bystrica|Michalovce|Nové Zámky|Spišská Nová Ves|Komárno|"
        "Levice|Humenné|Bardejov|Liptovský Mikuláš|Ružomberok|Piešťany|Dolný Kubín|Štúrovo|"
        "Šaľa|Rožňava|Čadca|Vranov nad Topľou",
        "Univerzita Komenského|Mestská knižnica|Občianske združenie|Nadácia pre deti Slovenska|"
        "Základná škola|Slovenské národné divadlo|Matica slovenská|Spolok priateľov|"
        "Ústav pamäti národa|Dom kultúry|Vinárstvo Vŕšok|Kameňolom Stĺp",
    ),
    "hu": (
        "Győző Ödön Zsófia Erzsébet Gyöngyi László István Éva Tünde Ildikó Gábor Zoltán Katalin "
        "Judit Ferenc Sándor Béla Csaba Réka Dóra Bálint Örs Levente Ágnes Márta Tímea Kinga "
        "Szilárd Lőrinc Jenő Erika Gedeon Előd Csilla",
        "Nagy Kovács Tóth Szabó Horváth Varga Kiss Molnár Németh Farkas Balogh Papp Takács "
        "Juhász Lakatos Mészáros Oláh Rácz Fekete Szilágyi Török Fehér Balázs Gál Szűcs Kocsis "
        "Pintér Fodor Sipos Lukács Gulyás Biró Király Fülöp Hegedűs Deák Illés Szőke Fábián "
        "Vörös Jónás Székely Gáspár Pásztor Dudás Orbán Erdős Kőrösi Győri Kőszegi Csősz "
        "Weöres Tőkés",
        "Budapest|Debrecen|Szeged|Miskolc|Pécs|Győr|Nyíregyháza|Kecskemét|Székesfehérvár|"
        "Szombathely|Szolnok|Tatabánya|Kaposvár|Érd|Veszprém|Békéscsaba|Zalaegerszeg|Sopron|"
        "Eger|Nagykanizsa|Dunaújváros|Hódmezővásárhely|Szekszárd|Salgótarján|Cegléd|Ózd|Vác|"
        "Gödöllő|Mosonmagyaróvár|Esztergom|Kőszeg|Balatonfüred|Hajdúböszörmény|Mezőkövesd",
        "Egyetemi Könyvtár|Magyar Tudományos Akadémia|Alapítvány a Gyermekekért|"
        "Művelődési Ház|Önkormányzat|Közösségi Ház|Nemzeti Színház|Egyesület|"
        "Református Egyház|Zeneművészeti Egyetem|Szövetkezet|Tűzoltóság|Fővárosi Állatkert",
    ),
    "hr": (
        "Đurđica Ivan Ivana Marija Josip Luka Ana Petra Matija Željko Dražen Goran Mirjana "
        "Snježana Tomislav Zvonimir Vesna Branimir Dubravka Đuro Mićo Ljiljana Živko Nataša "
        "Mojca Špela Jože Anže Tjaša Rok Nejc Žiga Urška Primož Matjaž Bojan Ćiril",
        "Horvat Kovačević Babić Marić Jurić Novak Kovačić Knežević Vuković Marković Petrović "
        "Matić Tomić Pavlović Kovač Božić Blažević Grgić Pavić Radić Perić Filipović Šarić "
        "Lovrić Vidović Perković Popović Bošnjak Jukić Barišić Đurđević Mlakar Krajnc Zupančič "
        "Potočnik Kovačič Žagar Golob Košir Hribar Vidmar Zajc Gregorič Bizjak Čeh Jerič "
        "Koželj Mavrič Šinkovec Štrukelj Ćosić Mićić Nećak",
        "Zagreb|Split|Rijeka|Osijek|Zadar|Pula|Slavonski Brod|Karlovac|Varaždin|Šibenik|Sisak|"
        "Vinkovci|Velika Gorica|Dubrovnik|Bjelovar|Koprivnica|Požega|Đakovo|Čakovec|Vukovar|"
        "Ljubljana|Maribor|Celje|Kranj|Koper|Velenje|Novo mesto|Ptuj|Nova Gorica|"
        "Murska Sobota|Škofja Loka|Domžale|Kočevje|Žalec|Šempeter",
        "Sveučilište u Zagrebu|Gradska knjižnica|Udruga građana|Zaklada Kultura nova|"
        "Osnovna škola|Hrvatsko narodno kazalište|Društvo prijateljev|Univerza v Ljubljani|"
        "Mestna knjižnica|Zavod za kulturo|Občina Škofja Loka|Dobrovoljno vatrogasno društvo",
    ),
}

ENGLISH: tuple[str, str, str, str] = (
    "John Mary James Patricia Robert Jennifer Michael Linda William Elizabeth David Susan "
    "Richard Jessica Joseph Sarah Thomas Karen Charles Nancy Daniel Lisa Matthew Betty",
    "Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Taylor Moore Jackson "
    "Martin Lee Thompson White Harris Clark Lewis Robinson Walker Young Allen King Wright",
    "London|Manchester|Dublin|Edinburgh|Cardiff|Leeds|Bristol|Oxford|Cambridge|Boston|"
    "Chicago|Toronto|Sydney|Brussels|Luxembourg|Strasbourg",
    "European Network|Open Society|City Library|Arts Council|Chamber of Commerce|"
    "Community Trust|Youth Forum|Green Alliance|Heritage Foundation|Media Lab",
)

ENCODINGS = (
    "cp1250",
    "cp1252",
    "latin-1",
    "iso8859-2",
    "iso8859-15",
    "utf-8",
    "utf-8-sig",
    "utf-16",
    "utf-16-le",
)
"""Encodings every text is tried in; ``utf-16`` writes a BOM, ``utf-16-le`` none."""

GROUPS: dict[str, tuple[str, ...]] = {
    "western": ("fr", "es", "pt", "ca", "de", "it", "nl", "da", "sv", "fi", "is", "et"),
    "central": ("ro-cedilla", "pl", "cs", "sk", "hu", "hr", "de"),
    "europe": tuple(LANGUAGES),
}
"""International lists: which languages each one mixes."""


@dataclass(frozen=True)
class Sample:
    """One corpus file: what it says, and the bytes it is saved as."""

    language: str
    kind: str
    encoding: str
    rows: tuple[tuple[str, ...], ...]
    data: bytes

    @property
    def name(self) -> str:
        return f"{self.language}-{self.kind}-{self.encoding}.csv"


def _words(text: str) -> list[str]:
    return text.split("|") if "|" in text else text.split()


def _lists(language: str) -> tuple[list[str], list[str], list[str], list[str]]:
    if language == "en":
        source = ENGLISH
    else:
        source = LANGUAGES["ro" if language == "ro-cedilla" else language]
    first, last, cities, orgs = (_words(t) for t in source)
    if language == "ro-cedilla":
        # What cp1250 and ISO-8859-2 exports hold: they have only the cedilla forms.
        table = str.maketrans("șțȘȚ", "şţŞŢ")
        first, last, cities, orgs = (
            [w.translate(table) for w in words] for words in (first, last, cities, orgs)
        )
    return first, last, cities, orgs


_ASCII = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "Ae"})
_ASCII.update(str.maketrans({"ð": "d", "Ð": "D", "þ": "th", "Þ": "Th", "ß": "ss", "đ": "d"}))
_ASCII.update(str.maketrans({"Đ": "D", "œ": "oe", "Œ": "Oe", "ı": "i"}))


def ascii_fold(text: str) -> str:
    """``Ștefan Țurcanu`` -> ``Stefan Turcanu``: how such names end up in addresses."""
    text = unicodedata.normalize("NFKD", text.translate(_ASCII))
    return "".join(c for c in text if c.isascii())


def _person(rnd: random.Random, language: str) -> tuple[str, str, str, str]:
    first, last, cities, orgs = _lists(language)
    given, family = rnd.choice(first), rnd.choice(last)
    local = ascii_fold(f"{given}.{family}").lower().replace(" ", "").replace("'", "")
    email = f"{local}.{rnd.randrange(1000)}@example.{rnd.choice(['org', 'eu', 'net'])}"
    return email, f"{given} {family}", rnd.choice(orgs), rnd.choice(cities)


def _rows(rnd: random.Random, languages: list[str], count: int) -> list[tuple[str, ...]]:
    return [_person(rnd, rnd.choice(languages)) for _ in range(count)]


def _mostly_ascii(
    rnd: random.Random, language: str, count: int, special: int
) -> list[tuple[str, ...]]:
    rows = _rows(rnd, ["en"], count)
    first, last, _, _ = _lists(language)
    accented = [w for w in first + last if not w.isascii()]
    for _ in range(special):
        i = rnd.randrange(count)
        email, name, org, city = rows[i]
        given, family = name.split(" ", 1)
        if rnd.random() < 0.5:
            given = rnd.choice(accented)
        else:
            family = rnd.choice(accented)
        rows[i] = (email, f"{given} {family}", org, city)
    return rows


def _csv(rows: list[tuple[str, ...]], rnd: random.Random) -> str:
    delimiter = rnd.choice([",", ";"])
    end = rnd.choice(["\r\n", "\n"])

    def cell(value: str) -> str:
        if delimiter in value or '"' in value:
            return '"' + value.replace('"', '""') + '"'
        return value

    lines = [delimiter.join(["email", "name", "organisation", "city"])]
    lines += [delimiter.join(cell(v) for v in row) for row in rows]
    return end.join(lines) + end


ISSUE_MIX = (
    ("ines@example.es", "Iñaki Goñi", "Forêt et Patrimoine", "Donostia"),
    ("joao@example.pt", "João Simões", "Coût zéro", "Lisboa"),
    ("helene@example.fr", "Hélène Lefèvre", "Forêt", "Besançon"),
)


def texts(
    seed: int = 8, max_rows: int | None = None
) -> Iterator[tuple[str, str, list[tuple[str, ...]]]]:
    """(language, kind, rows) for every text of the corpus, reproducibly.

    ``max_rows`` leaves out the longer files (for a quicker run).
    """
    for language, kind, rows in _texts(seed):
        if max_rows is None or len(rows) <= max_rows:
            yield language, kind, rows


def _texts(seed: int) -> Iterator[tuple[str, str, list[tuple[str, ...]]]]:
    rnd = random.Random(seed)
    for language in [*LANGUAGES, "ro-cedilla"]:
        for size in (1, 2, 3, 5, 8, 12, 20, 40, 100, 400):
            for copy in range(3 if size < 40 else 2):
                yield language, f"{size}rows{copy}", _rows(rnd, [language], size)
        for special in (1, 2):
            for copy in range(6):
                count = rnd.choice([30, 200, 2000])
                yield (
                    language,
                    f"ascii{count}+{special}.{copy}",
                    _mostly_ascii(rnd, language, count, special),
                )
    for group, languages in GROUPS.items():
        for size in (4, 10, 30, 100, 400):
            for copy in range(4):
                yield f"mix-{group}", f"{size}rows{copy}", _rows(rnd, list(languages), size)
    yield "mix-issue", "3rows", list(ISSUE_MIX)


def corpus(seed: int = 8, max_rows: int | None = None) -> Iterator[Sample]:
    """Every text of :func:`texts` in every encoding of :data:`ENCODINGS` that can hold it."""
    for language, kind, rows in texts(seed, max_rows):
        # The layout depends on the text, not on which texts were left out.
        rnd = random.Random(f"{seed} {language} {kind}")
        text = _csv(rows, rnd)
        for encoding in ENCODINGS:
            try:
                data = text.encode(encoding)
            except UnicodeEncodeError:
                continue
            yield Sample(language, kind, encoding, tuple(rows), data)


def classify(sample: Sample, path: Path) -> str:
    """How the real reader does on ``sample``: ``correct``, ``stopped`` or what went wrong.

    ``stopped`` is an encoding error (nothing would be imported); ``wrong`` is text that
    differs from what was written.
    """
    path.write_bytes(sample.data)
    try:
        with CsvReader(path) as reader:
            got = [tuple(fields) for _, fields in reader.records()]
    except ImportFileError as exc:
        encoding = ("cannot tell the encoding", "not valid utf-8")
        return "stopped" if any(e in exc.message for e in encoding) else f"error: {exc}"
    finally:
        path.unlink()
    return "correct" if got == list(sample.rows) else "wrong"
