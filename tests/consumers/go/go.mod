module example.com/mcconsumer

go 1.24
